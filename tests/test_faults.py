"""The transfer survives what real networks and CDNs do, and says what happened."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from provisioner.models import DownloadJob
from tests.helpers import actions, blob, download, files_below, sha256

SIZE = 2 * 1024 * 1024 + 5
WEIGHTS = blob(SIZE, seed=7)


@pytest.fixture
def repo(hub):
    hub.add_repo("acme/faulty", {"config.json": b"{}", "model.safetensors": WEIGHTS})
    return "acme/faulty"


def _weights_gets(hub):
    hub.wait_idle()
    return [r for r in hub.file_host.requests if r.method == "GET"]


def _assert_whole(job: DownloadJob) -> None:
    assert job.state == DownloadJob.SUCCEEDED, job.error
    path = Path(job.entry.path) / "model.safetensors"
    assert sha256(path.read_bytes()) == sha256(WEIGHTS)
    assert job.entry.files.get(path="model.safetensors").sha256 == sha256(WEIGHTS)


def test_it_resumes_with_range_after_the_connection_drops(hub, repo, hive):
    hub.set_fault(repo, "model.safetensors", drop_after=700_000)
    job = download(repo, hive)
    _assert_whole(job)
    gets = _weights_gets(hub)
    assert len(gets) == 2
    assert gets[0].range is None
    assert gets[1].range.startswith("bytes=") and int(gets[1].range[6:].split("-")[0]) > 0
    retries = job.events.filter(action="model_download_retry")
    assert retries.exists() and "closed" in retries.first().human


def test_it_restarts_the_file_cleanly_when_the_server_ignores_range(hub, repo, hive):
    hub.set_fault(repo, "model.safetensors", drop_after=500_000, ignore_range=True)
    job = download(repo, hive)
    _assert_whole(job)
    assert any("ignored the resume" in e.human for e in job.events.all())


@pytest.mark.parametrize("status", [500, 502, 503])
def test_it_retries_server_errors(hub, repo, hive, status):
    hub.set_fault(repo, "model.safetensors", statuses=[status, status])
    job = download(repo, hive)
    _assert_whole(job)
    assert [e.fields["reason"] for e in job.events.filter(action="model_download_retry")] == [
        f"server answered {status}"
    ] * 2


def test_it_honours_retry_after_on_429(hub, repo, hive):
    hub.set_fault(repo, "model.safetensors", statuses=[(429, {"Retry-After": "1"})])
    started = time.monotonic()
    job = download(repo, hive)
    _assert_whole(job)
    assert time.monotonic() - started >= 1.0
    retry = job.events.get(action="model_download_retry")
    assert retry.fields["delay_s"] == 1.0 and "429" in retry.human


def test_it_abandons_a_stalled_request_and_retries(hub, repo, hive, settings):
    settings.RBEE_STALL_TIMEOUT = 0.5
    hub.set_fault(repo, "model.safetensors", stall_after_headers=5)
    started = time.monotonic()
    job = download(repo, hive)
    _assert_whole(job)
    assert time.monotonic() - started < 4
    assert any("stalled" in e.human for e in job.events.filter(action="model_download_retry"))


def test_it_gives_up_after_bounded_attempts(hub, repo, hive, settings):
    settings.RBEE_DOWNLOAD_ATTEMPTS = 3
    hub.set_fault(repo, "model.safetensors", statuses=[503] * 10)
    job = download(repo, hive)
    assert job.state == DownloadJob.FAILED
    assert job.error_kind == "network"
    assert "giving up after 3 attempts" in job.error
    assert len(_weights_gets(hub)) == 3


def test_it_catches_a_flipped_byte_retries_once_then_succeeds(hub, repo, hive):
    hub.set_fault(repo, "model.safetensors", flip_byte_at=12345, flip_times=1)
    job = download(repo, hive)
    _assert_whole(job)
    assert any("verification failed" in e.human for e in job.events.all())


def test_it_fails_when_the_bytes_never_match(hub, repo, hive, settings):
    hub.set_fault(repo, "model.safetensors", flip_byte_at=12345)
    job = download(repo, hive)
    assert job.state == DownloadJob.FAILED
    assert job.error_kind == "verification"
    assert "sha256" in job.error and "again after a fresh download" in job.error
    assert len(_weights_gets(hub)) == 2
    assert not (settings.RBEE_MODELS_DIR / ".partial" / str(job.pk)).exists()
    assert "huggingface" not in files_below(settings.RBEE_MODELS_DIR)


def test_it_refuses_a_file_bigger_than_planned(hub, hive, settings):
    hub.add_repo("acme/liar", {"model.safetensors": WEIGHTS}, claimed_sizes={"model.safetensors": 1000})
    job = download("acme/liar", hive)
    assert job.state == DownloadJob.FAILED
    assert job.error_kind == "verification"
    assert not (settings.RBEE_MODELS_DIR / ".partial" / str(job.pk)).exists()


@pytest.mark.parametrize("name", ["../escape.bin", "/abs.bin", "a\\b.bin", "dir/../../x.bin"])
def test_it_refuses_traversal_names_before_any_write(hub, hive, settings, name):
    hub.add_repo("evil/names", {name: b"x" * 10, "config.json": b"{}"})
    job = download("evil/names", hive)
    assert job.state == DownloadJob.FAILED and job.error_kind == "unsafe_path"
    assert not _weights_gets(hub)
    # Nothing was written anywhere: not in the models dir, not beside it, not at the root.
    assert files_below(settings.RBEE_MODELS_DIR.parent) == set()
    assert not Path("/abs.bin").exists() and not Path("/x.bin").exists()


def test_the_progress_is_throttled_and_honest(hub, repo, hive, settings):
    settings.RBEE_PROGRESS_EVENTS_PER_S = 5.0
    hub.set_fault(repo, "model.safetensors", throttle_bps=2 * 1024 * 1024)
    job = download(repo, hive)
    _assert_whole(job)
    progress = list(job.events.filter(action="model_download_progress").order_by("seq"))
    duration = (progress[-1].emitted_at - progress[0].emitted_at).total_seconds()
    assert len(progress) >= 3
    assert (len(progress) - 1) / max(duration, 0.001) <= 5.5
    done = [e.fields["bytes_done"] for e in progress]
    assert done == sorted(done) and done[-1] == job.bytes_total
    assert all(e.fields["bytes_total"] == job.bytes_total for e in progress)
    assert any(e.fields["speed_bps"] for e in progress)
    assert actions(job).count("model_download_complete") == 1


def test_files_kept_in_git_are_checked_against_their_blob_id(hub, hive):
    config = b'{"model_type": "llama", "hidden_size": 2048}'
    hub.add_repo("acme/git-files", {"config.json": config, "model.safetensors": WEIGHTS})
    hub.set_fault("acme/git-files", "config.json", flip_byte_at=3, flip_times=1)
    job = download("acme/git-files", hive)
    assert job.state == DownloadJob.SUCCEEDED, job.error
    assert (Path(job.entry.path) / "config.json").read_bytes() == config
    assert any("git blob id" in e.human for e in job.events.all())


def test_a_file_that_never_matches_its_blob_id_fails_the_job(hub, hive, settings):
    hub.add_repo("acme/git-bad", {"config.json": b'{"a": 1}'})
    hub.set_fault("acme/git-bad", "config.json", flip_byte_at=2)
    job = download("acme/git-bad", hive)
    assert job.state == DownloadJob.FAILED and job.error_kind == "verification"
    assert "git blob id" in job.error
    assert not (settings.RBEE_MODELS_DIR / ".partial" / str(job.pk)).exists()

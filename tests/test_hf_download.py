"""Hugging Face downloads through huggingface_hub and our transfer, against the fake hub."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from catalog.models import ModelEntry
from provisioner.models import DownloadJob
from tests.helpers import actions, blob, download, files_below, sha256

WEIGHTS = blob(3 * 1024 * 1024 + 17, seed=1)
CONFIG = b'{"model_type": "llama"}'


@pytest.fixture
def repo(hub):
    return hub.add_repo(
        "acme/tiny-llama",
        {"config.json": CONFIG, "model.safetensors": WEIGHTS, "tokenizer/tokenizer.json": b"{}"},
        tags=["v1.0"],
    )


def test_it_downloads_plain_files_and_writes_the_entry_last(hub, repo, hive, alice):
    job = download("acme/tiny-llama", hive, alice)

    assert job.state == DownloadJob.SUCCEEDED, job.error
    entry = ModelEntry.objects.get(hive=hive, reference="hf:acme/tiny-llama")
    assert job.entry == entry
    assert entry.revision == repo
    assert entry.size_bytes == len(WEIGHTS) + len(CONFIG) + 2
    folder = Path(entry.path)
    assert files_below(folder) == {"config.json", "model.safetensors", "tokenizer/tokenizer.json"}
    assert not any(p.is_symlink() for p in folder.rglob("*"))
    assert (folder / "model.safetensors").read_bytes() == WEIGHTS
    rows = {f.path: f for f in entry.files.all()}
    assert rows["model.safetensors"].sha256 == sha256(WEIGHTS)
    assert rows["config.json"].sha256 == sha256(CONFIG)
    assert not (folder.parent.parent.parent / ".partial" / str(job.pk)).exists()
    assert actions(job)[0] == "model_download_queued"
    assert "model_download_start" in actions(job)
    assert "model_download_plan" in actions(job)
    assert actions(job)[-1] == "model_download_complete"
    assert job.bytes_done == job.bytes_total == entry.size_bytes


def test_it_numbers_events_one_two_three(hub, repo, hive):
    job = download("acme/tiny-llama", hive)
    seqs = list(job.events.order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, len(seqs) + 1))
    assert job.last_seq == seqs[-1]


def test_it_pins_a_tag_and_records_the_commit(hub, repo, hive):
    hub.add_commit("acme/tiny-llama", {"config.json": b'{"new": true}'})
    job = download("acme/tiny-llama@v1.0", hive)
    entry = job.entry
    assert entry.revision == repo
    assert (Path(entry.path) / "config.json").read_bytes() == CONFIG


def test_it_records_the_newest_commit_of_main(hub, repo, hive):
    newer = hub.add_commit("acme/tiny-llama", {"config.json": b'{"new": true}'})
    job = download("hf:acme/tiny-llama", hive)
    assert job.entry.revision == newer


def test_it_says_when_the_model_is_already_in_the_catalog(hub, repo, hive):
    download("acme/tiny-llama", hive)
    before = len(hub.requests)
    again = download("acme/tiny-llama", hive)
    assert again.state == DownloadJob.SUCCEEDED
    assert "model_download_exists" in actions(again)
    assert "model_download_plan" not in actions(again)
    assert len(hub.requests) == before  # nothing asked of the hub


@pytest.mark.parametrize(
    ("reference", "kind", "words"),
    [
        ("acme/missing", "repo_not_found", "not found"),
        ("acme/tiny-llama@no-such-branch", "revision_not_found", "no-such-branch"),
        ("acme/tiny-llama:*.gguf", "selector_matched_nothing", "matches"),
    ],
)
def test_it_fails_with_a_reason_an_admin_can_act_on(hub, repo, hive, reference, kind, words):
    job = download(reference, hive)
    assert job.state == DownloadJob.FAILED
    assert job.error_kind == kind
    assert words in job.error
    last = job.events.order_by("-seq").first()
    assert last.action == "model_download_failed" and last.level == "error"
    assert not ModelEntry.objects.exists()


def test_it_explains_a_gated_repo_without_token(hub, hive):
    hub.token = "hf_secret_test_token"
    hub.add_repo("meta/gated", {"model.safetensors": blob(2048)}, gated=True)
    job = download("meta/gated", hive)
    assert job.state == DownloadJob.FAILED
    assert job.error_kind == "access_denied"
    assert "HF_TOKEN" in job.error and "gated" in job.error


def test_it_downloads_a_gated_repo_with_the_token_and_never_shows_it(hub, hive, settings, caplog, alice_client):
    token = "hf_secret_test_token"
    hub.token = token
    settings.HF_TOKEN = token
    hub.add_repo("meta/gated", {"model.safetensors": blob(4096), "config.json": b"{}"}, gated=True)
    caplog.set_level(logging.DEBUG)
    job = download("meta/gated", hive)
    assert job.state == DownloadJob.SUCCEEDED, job.error
    assert token not in caplog.text
    for event in job.events.all():
        assert token not in event.human and token not in str(event.fields)
    pages = [f"/jobs/{job.pk}/", f"/models/{job.entry_id}/", f"/api/jobs/{job.pk}/events/", f"/api/jobs/{job.pk}/"]
    for page in pages:
        assert token not in alice_client.get(page).content.decode()


def test_the_token_does_not_follow_redirects_to_the_file_host(hub, hive, settings):
    token = "hf_secret_test_token"
    hub.token = token
    settings.HF_TOKEN = token
    hub.add_repo("meta/gated", {"model.safetensors": blob(4096)}, gated=True)
    download("meta/gated", hive)
    cdn = [r for r in hub.file_host.requests if r.method == "GET"]
    assert cdn, "the LFS file should come from the file host"
    hub_gets = [r for r in hub.requests if r.method == "GET" and r.file == "model.safetensors"]
    assert any(token in str(r.headers) for r in hub_gets), "the hub itself should get the token"
    assert all(token not in str(r.headers) for r in cdn)


def test_it_refuses_remote_names_that_escape_the_folder(hub, hive, settings):
    hub.add_repo("evil/repo", {"../../escape.bin": blob(100), "config.json": b"{}"})
    job = download("evil/repo", hive)
    assert job.state == DownloadJob.FAILED
    assert job.error_kind == "unsafe_path"
    assert not (settings.RBEE_MODELS_DIR.parent / "escape.bin").exists()
    assert not any("escape" in p for p in files_below(settings.RBEE_MODELS_DIR.parent))
    assert not [r for r in hub.file_host.requests if r.method == "GET"]


def test_it_refuses_a_network_error_with_a_clear_reason(hive, settings):
    settings.HF_ENDPOINT = "http://127.0.0.1:9"  # nothing listens on the discard port
    job = download("acme/anything", hive)
    assert job.state == DownloadJob.FAILED
    assert job.error_kind == "network"
    assert "127.0.0.1:9" in job.error

"""A restart loses no job and leaves nothing half-written in the catalog."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from catalog.models import ModelEntry
from provisioner.install import INSTALL_MARKER
from provisioner.models import DownloadJob
from provisioner.recovery import recover_hive
from provisioner.vendors.base import Plan, PlannedFile
from tests.helpers import blob, sha256, wait_finished, wait_until
from tests.live import LiveDashboard


def _planned_job(hive, folder: Path, files: dict[str, bytes], state=DownloadJob.RUNNING) -> DownloadJob:
    plan = Plan(
        vendor="huggingface",
        reference="hf:acme/crashed",
        revision="f" * 40,
        files=[PlannedFile(path=p, size=len(d)) for p, d in files.items()],
    )
    return DownloadJob.objects.create(
        reference="hf:acme/crashed", hive=hive, state=state, plan=plan.to_json(), bytes_total=plan.total_bytes
    )


def _install_folder(settings, files: dict[str, bytes], job: DownloadJob) -> Path:
    folder = settings.RBEE_MODELS_DIR / "huggingface" / "acme" / "crashed"
    folder.mkdir(parents=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    (folder / INSTALL_MARKER).write_text(json.dumps({"job": job.pk, "reference": job.reference}))
    return folder


def test_files_moved_but_no_entry_are_recovered_into_the_catalog(hive, settings):
    files = {"config.json": b"{}", "model.safetensors": blob(1000)}
    job = _planned_job(hive, settings.RBEE_MODELS_DIR, files)
    folder = _install_folder(settings, files, job)

    recover_hive(hive, sole_worker=True)

    entry = ModelEntry.objects.get(reference="hf:acme/crashed")
    assert entry.path == str(folder) and entry.file_count == 2
    assert entry.files.get(path="model.safetensors").sha256 == sha256(files["model.safetensors"])
    assert not (folder / INSTALL_MARKER).exists()
    job.refresh_from_db()
    assert job.state == DownloadJob.SUCCEEDED and job.entry == entry
    assert job.events.last().action == "model_download_complete"


def test_files_that_do_not_match_the_plan_are_removed(hive, settings):
    files = {"model.safetensors": blob(1000)}
    job = _planned_job(hive, settings.RBEE_MODELS_DIR, files, state=DownloadJob.FAILED)
    folder = _install_folder(settings, {"model.safetensors": b"short"}, job)
    recover_hive(hive, sole_worker=True)
    assert not folder.exists()
    assert not ModelEntry.objects.exists()


def test_an_entry_whose_files_vanished_is_marked_missing(hive, settings):
    entry = ModelEntry.objects.create(
        hive=hive, reference="hf:a/gone", name="a/gone", vendor="huggingface", path=str(settings.RBEE_MODELS_DIR / "gone")
    )
    recover_hive(hive, sole_worker=True)
    entry.refresh_from_db()
    assert entry.status == ModelEntry.STATUS_MISSING


def test_orphaned_partials_are_removed_and_owned_ones_kept(hive, settings):
    partial = settings.RBEE_MODELS_DIR / ".partial"
    kept = DownloadJob.objects.create(reference="hf:a/kept", hive=hive, state=DownloadJob.FAILED, error_kind="network")
    done = DownloadJob.objects.create(reference="hf:a/done", hive=hive, state=DownloadJob.SUCCEEDED)
    for name in [str(kept.pk), str(done.pk), "99999", "junk"]:
        (partial / name).mkdir(parents=True)
        (partial / name / "f.bin").write_bytes(b"x")
    recover_hive(hive, sole_worker=True)
    assert sorted(p.name for p in partial.iterdir()) == [str(kept.pk)]


def test_running_and_queued_jobs_are_requeued(hub, hive, settings):
    hub.add_repo("acme/requeued", {"config.json": b"{}"})
    running = DownloadJob.objects.create(reference="hf:acme/requeued", hive=hive, state=DownloadJob.RUNNING, process="gone:1")
    requeued = recover_hive(hive, sole_worker=True)
    assert requeued == [running.pk]
    assert wait_finished(running).state == DownloadJob.SUCCEEDED


def test_the_catalog_page_shows_disk_used_by_partials(hive, settings, alice_client):
    partial = settings.RBEE_MODELS_DIR / ".partial" / "7"
    partial.mkdir(parents=True)
    (partial / "f.bin").write_bytes(b"x" * 3 * 1024 * 1024)
    body = alice_client.get("/models/").content.decode()
    assert "3.0 MiB in partial downloads" in body


def _download_until(live: LiveDashboard, model: str, nbytes: int) -> dict:
    """Start a download on the live server and return its job once it holds ``nbytes``."""
    client = live.client()
    [job] = client.post("/api/jobs/", json={"model": model}).json()["jobs"]
    wait_until(lambda: client.get(f"/api/jobs/{job['id']}/").json()["bytes_done"] >= nbytes, 30, f"{nbytes} bytes")
    return job


@pytest.mark.slow
def test_a_sigkilled_server_resumes_its_download_from_the_bytes_on_disk(hub, tmp_path):
    weights = blob(12 * 1024 * 1024, seed=9)
    hub.add_repo("acme/kill9", {"config.json": b"{}", "model.safetensors": weights})
    hub.set_fault("acme/kill9", "model.safetensors", throttle_bps=3 * 1024 * 1024)
    live = LiveDashboard(tmp_path / "data", env={"HF_ENDPOINT": hub.url, "RBEE_STALL_TIMEOUT": "5"})
    live.setup().start()
    try:
        job = _download_until(live, "acme/kill9", 3 * 1024 * 1024)
        live.kill(signal.SIGKILL)
        hub.clear_faults()

        live.start()
        client = live.client()
        finished = live.wait_for_job(client, job["id"], ("succeeded", "failed"))
        assert finished["state"] == "succeeded", finished["error"]
        entry = client.get(f"/api/models/{finished['entry_id']}/").json()
        files = {f["path"]: f for f in entry["files"]}
        assert files["model.safetensors"]["sha256"] == sha256(weights)
        assert sha256(Path(entry["path"], "model.safetensors").read_bytes()) == sha256(weights)
        hub.wait_idle()
        gets = [r for r in hub.file_host.requests if r.method == "GET"]
        resumed_from = [int(r.range[6:].split("-")[0]) for r in gets if r.range]
        assert resumed_from and resumed_from[-1] >= 3 * 1024 * 1024 - 2 * 1024 * 1024
        events = client.get(f"/api/jobs/{job['id']}/events/").json()["events"]
        assert "model_download_resumed" in [e["action"] for e in events]
        assert not (tmp_path / "data" / "models" / ".partial" / str(job["id"])).exists()
    finally:
        live.stop()


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_gracefully_stopped_server_hands_its_download_back_and_resumes_it(hub, tmp_path, sig):
    """Found broken: a SIGTERM or Ctrl-C failed the job ("cannot schedule new futures
    after shutdown") and deleted its partial files, while SIGKILL resumed fine."""
    weights = blob(12 * 1024 * 1024, seed=10)
    hub.add_repo("acme/term", {"config.json": b"{}", "model.safetensors": weights})
    hub.set_fault("acme/term", "model.safetensors", throttle_bps=3 * 1024 * 1024)
    live = LiveDashboard(tmp_path / "data", env={"HF_ENDPOINT": hub.url, "RBEE_STALL_TIMEOUT": "5"})
    live.setup().start()
    partial = tmp_path / "data" / "models" / ".partial"
    try:
        job = _download_until(live, "acme/term", 3 * 1024 * 1024)
        live.kill(sig)
        assert live.process is not None and live.process.returncode is not None
        kept = partial / str(job["id"]) / "model.safetensors"
        assert kept.stat().st_size >= 2 * 1024 * 1024, live.log()
        hub.clear_faults()

        live.start()
        client = live.client()
        finished = live.wait_for_job(client, job["id"], ("succeeded", "failed"))
        assert finished["state"] == "succeeded", finished["error"]
        events = client.get(f"/api/jobs/{job['id']}/events/").json()["events"]
        actions = [e["action"] for e in events]
        assert "model_download_failed" not in actions
        handed_back = [e for e in events if e["fields"].get("requeued")]
        assert handed_back and "resumes" in handed_back[0]["human"]
        assert "model_download_resumed" in actions
        hub.wait_idle()
        gets = [r for r in hub.file_host.requests if r.method == "GET" and r.range]
        assert gets and int(gets[-1].range[6:].split("-")[0]) >= 2 * 1024 * 1024
    finally:
        live.stop()

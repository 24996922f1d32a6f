"""Cancel stops the network within two seconds and leaves nothing behind."""

from __future__ import annotations

import time

import pytest

from provisioner.models import DownloadJob
from tests.helpers import actions, blob, wait_finished, wait_until


@pytest.fixture
def slow_repo(hub):
    hub.add_repo("acme/slow", {"config.json": b"{}", "model.safetensors": blob(8 * 1024 * 1024, seed=3)})
    return "acme/slow"




def _file_host_busy(hub) -> bool:
    return any(r.method == "GET" and not r.done for r in hub.file_host.requests)


@pytest.mark.parametrize("fault", [{"throttle_bps": 512 * 1024}, {"stall_after_headers": 60}])
def test_it_stops_network_activity_within_two_seconds(hub, slow_repo, hive, alice, alice_client, settings, fault):
    settings.RBEE_STALL_TIMEOUT = 30.0  # the stall must not end by itself
    hub.set_fault(slow_repo, "model.safetensors", **fault)
    job, _ = DownloadJob.submit(slow_repo, hive, alice)
    wait_until(lambda: _file_host_busy(hub))

    response = alice_client.post(f"/jobs/{job.pk}/cancel/")
    cancelled_at = time.monotonic()
    assert response.status_code == 303
    wait_until(lambda: not _file_host_busy(hub), timeout=2.5)
    assert time.monotonic() - cancelled_at < 2.0
    job = wait_finished(job, timeout=5)
    assert job.state == DownloadJob.CANCELLED
    assert not job.partial_dir.exists()
    assert actions(job)[-1] == "model_download_cancelled"
    assert "model_download_cancel_requested" in actions(job)
    assert not job.entry


def test_it_cancels_a_queued_job_on_the_spot(hive, alice, alice_client):
    # Created without being sent to the pool, so it stays queued.
    job = DownloadJob.objects.create(reference="hf:acme/never-started", hive=hive)
    response = alice_client.post(f"/jobs/{job.pk}/cancel/")
    assert response.status_code == 303
    job.refresh_from_db()
    assert job.state == DownloadJob.CANCELLED
    assert actions(job)[-1] == "model_download_cancelled"


def test_cancel_of_a_finished_job_changes_nothing(hive, alice, alice_client):
    job = DownloadJob.objects.create(reference="hf:a/b", hive=hive, state=DownloadJob.SUCCEEDED)
    before = job.last_seq
    alice_client.post(f"/jobs/{job.pk}/cancel/")
    job.refresh_from_db()
    assert job.state == DownloadJob.SUCCEEDED and job.last_seq == before


def test_retry_runs_a_cancelled_job_again(hub, slow_repo, hive, alice, alice_client):
    job = DownloadJob.objects.create(reference="hf:acme/slow", hive=hive, state=DownloadJob.CANCELLED)
    response = alice_client.post(f"/jobs/{job.pk}/retry/")
    assert response.status_code == 303
    job = wait_finished(job)
    assert job.state == DownloadJob.SUCCEEDED, job.error


def test_retry_of_a_running_job_changes_nothing(hive, alice_client):
    job = DownloadJob.objects.create(reference="hf:a/b", hive=hive, state=DownloadJob.RUNNING)
    alice_client.post(f"/jobs/{job.pk}/retry/")
    job.refresh_from_db()
    assert job.state == DownloadJob.RUNNING


def test_cancel_and_retry_answer_htmx_with_the_header_fragment(hive, alice_client):
    job = DownloadJob.objects.create(reference="hf:a/b", hive=hive)
    response = alice_client.post(f"/jobs/{job.pk}/cancel/", headers={"HX-Request": "true"})
    body = response.content.decode()
    assert response.status_code == 200 and 'id="job-header"' in body and "<html" not in body
    assert "Retry" in body


def test_it_requires_login(client, hive):
    job = DownloadJob.objects.create(reference="hf:a/b", hive=hive)
    assert client.post(f"/jobs/{job.pk}/cancel/").status_code == 302
    assert client.post(f"/jobs/{job.pk}/retry/").status_code == 302
    job.refresh_from_db()
    assert job.state == DownloadJob.QUEUED


def test_a_worker_that_lost_its_job_stops_and_touches_nothing(hub, slow_repo, hive, alice):
    hub.set_fault(slow_repo, "model.safetensors", throttle_bps=512 * 1024)
    job, _ = DownloadJob.submit(slow_repo, hive, alice)
    wait_until(lambda: _file_host_busy(hub))
    # Another worker resumed the job meanwhile (this one looked dead to it).
    DownloadJob.objects.filter(pk=job.pk).update(process="other-host:4242")
    wait_until(lambda: not _file_host_busy(hub), timeout=3)
    time.sleep(0.3)
    job.refresh_from_db()
    assert job.state == DownloadJob.RUNNING and job.process == "other-host:4242"
    assert job.partial_dir.exists()
    assert "model_download_cancelled" not in actions(job)
    assert "model_download_failed" not in actions(job)
    DownloadJob.objects.filter(pk=job.pk).update(state=DownloadJob.CANCELLED)

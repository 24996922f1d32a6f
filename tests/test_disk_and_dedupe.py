"""Disk-space pre-check, a full disk mid-download, and one active job per model."""

from __future__ import annotations

import contextlib
import shutil
import threading

import pytest
from django.test import Client

from provisioner.models import DownloadJob
from tests.helpers import actions, blob, download, wait_finished, wait_until


def test_it_refuses_a_download_that_cannot_fit_before_any_byte(hub, hive, settings):
    huge = 1 << 50  # a pebibyte
    hub.add_repo("acme/huge", {"config.json": b"{}"}, claimed_sizes={"model.safetensors": huge})
    job = download("acme/huge", hive)
    assert job.state == DownloadJob.FAILED
    assert job.error_kind == "disk_full"
    assert "needs 1.0 PiB" in job.error and "free" in job.error
    hub.wait_idle()
    assert not [r for r in hub.requests + hub.file_host.requests if r.method == "GET" and r.file]
    assert not [r for r in hub.file_host.requests if r.method == "GET"]
    assert actions(job)[-1] == "model_download_failed"


def test_the_reserve_counts(hub, hive, settings):
    free = shutil.disk_usage(settings.RBEE_MODELS_DIR.parent).free
    settings.RBEE_DISK_RESERVE = free + (10 << 30)  # nothing left once the reserve is kept
    hub.add_repo("acme/small", {"model.safetensors": blob(4096)})
    job = download("acme/small", hive)
    assert job.state == DownloadJob.FAILED and job.error_kind == "disk_full"
    assert "RBEE_DISK_RESERVE" in job.error


def test_a_full_disk_mid_download_fails_fast_without_retrying(hub, small_disk, hive, settings):
    hub.add_repo("acme/enospc", {"model.safetensors": blob(3 * 1024 * 1024)})
    hub.set_fault("acme/enospc", "model.safetensors", throttle_bps=1024 * 1024)
    job, _ = DownloadJob.submit("acme/enospc", hive, None)
    wait_until(lambda: job.partial_dir.exists() and any(job.partial_dir.iterdir()), what="the first bytes")
    # Something else on the box fills the disk after the pre-check passed.
    with open(small_disk / "filler", "wb") as filler:
        with contextlib.suppress(OSError):
            while True:
                filler.write(b"\0" * 65536)
    job = wait_finished(job)
    assert job.state == DownloadJob.FAILED
    assert job.error_kind == "disk_full"
    assert "disk is full" in job.error
    assert "model_download_retry" not in actions(job)
    assert not job.partial_dir.exists()


def test_identical_submissions_share_one_job(hive, alice):
    job, created = DownloadJob.submit("acme/same", hive, alice)
    again, created_again = DownloadJob.submit("hf:acme/same", hive, alice)
    assert created and not created_again and again.pk == job.pk


def test_concurrent_identical_submissions_return_the_same_job(hive, alice):
    # A hive no worker serves: the job stays queued, so every post races the same row.
    from catalog.models import Hive

    Hive.objects.create(name="elsewhere")
    results: list[int] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def post() -> None:
        client = Client()
        client.force_login(alice)
        try:
            barrier.wait()
            body = {"model": "acme/raced", "hive": "elsewhere"}
            response = client.post("/api/jobs/", body, content_type="application/json")
            results.append(response.json()["jobs"][0]["id"])
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=post) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors
    assert len(results) == 6 and len(set(results)) == 1
    assert DownloadJob.objects.filter(reference="hf:acme/raced").count() == 1
    assert DownloadJob.objects.get().state == DownloadJob.QUEUED


def test_the_database_refuses_a_second_active_job(hive):
    from django.db import IntegrityError, transaction

    DownloadJob.objects.create(reference="hf:a/b", hive=hive)
    with pytest.raises(IntegrityError), transaction.atomic():
        DownloadJob.objects.create(reference="hf:a/b", hive=hive, state=DownloadJob.RUNNING)
    DownloadJob.objects.create(reference="hf:a/b", hive=hive, state=DownloadJob.FAILED)  # history is fine


def test_queued_jobs_know_their_position(hive):
    first = DownloadJob.objects.create(reference="hf:a/one", hive=hive)
    second = DownloadJob.objects.create(reference="hf:a/two", hive=hive)
    assert (first.queue_position(), second.queue_position()) == (1, 2)

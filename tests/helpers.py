"""Small helpers shared by tests: run a job the way a worker does, read its story."""

from __future__ import annotations

import hashlib
import os
import time

from provisioner.models import DownloadJob


def blob(size: int, seed: int = 0) -> bytes:
    """Deterministic incompressible-looking bytes."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def download(reference: str, hive, user=None, timeout: float = 60.0) -> DownloadJob:
    """Submit a job and wait for the embedded worker pool to finish it (the real path)."""
    job, _ = DownloadJob.submit(reference, hive, user)
    return wait_finished(job, timeout)


def wait_finished(job: DownloadJob, timeout: float = 60.0) -> DownloadJob:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job.refresh_from_db()
        if job.is_finished:
            return job
        time.sleep(0.02)
    raise AssertionError(f"job {job.pk} still {job.state} after {timeout} s")


def actions(job: DownloadJob) -> list[str]:
    return list(job.events.order_by("seq").values_list("action", flat=True))


def files_below(root) -> set[str]:
    found = set()
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            found.add(os.path.relpath(os.path.join(dirpath, name), root))
    return found


def wait_until(predicate, timeout: float = 10.0, what: str = "the condition"):
    """Poll ``predicate`` until it returns something true; return that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := predicate():
            return result
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")

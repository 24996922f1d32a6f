"""The machinery around a job while it runs in this process.

A ``JobCancelToken`` is what the vendors see of a stop request; a ``JobWatcher``
heartbeats the job and turns a cancel asked from another process into that token;
``JobProgress`` turns byte counts into throttled narration. Every job running here
is registered, so a graceful stop of the process can hand them all back.
"""

from __future__ import annotations

import logging
import threading
import time

from django.conf import settings
from django.db import connection

from provisioner import bandwidth
from provisioner.models import Action, DownloadJob
from provisioner.vendors.base import Plan, StopSignal
from rbee.formatting import human_bytes, human_duration

logger = logging.getLogger(__name__)


class JobCancelToken(StopSignal):
    """Set to stop a job; callbacks cut blocked sockets right away.

    Why it was set decides what happens to the job: ``cancelled`` by the admin
    (partials removed), ``lost`` to another process (touch nothing), ``stopping``
    with this process (hand the job back, partials kept), ``paused`` by the admin or
    ``window`` closed (partials kept, the job waits).
    """

    CANCELLED = "cancelled"
    LOST = "lost"
    STOPPING = "stopping"
    PAUSED = "paused"
    WINDOW = "window"

    def __init__(self) -> None:
        super().__init__()
        self.reason = ""

    def set(self, reason: str = CANCELLED) -> None:  # type: ignore[override]
        self._raise(reason)

    def _record(self, why: str | None) -> None:
        self.reason = why or self.CANCELLED


# Job id -> its token, and an event set once the job's run is over.
_running: dict[int, tuple[JobCancelToken, threading.Event]] = {}
_running_lock = threading.Lock()
# Jobs this process sent to its task queue and has not run yet: what an embedded
# server's sweep leaves alone.
sent: set[int] = set()
# Set once this process stops: no new job starts here any more.
stopping = threading.Event()


def register(job_id: int, token: JobCancelToken) -> None:
    with _running_lock:
        _running[job_id] = (token, threading.Event())


def unregister(job_id: int) -> None:
    with _running_lock:
        _token, done = _running.pop(job_id, (None, None))
    if done is not None:
        done.set()


def stop_all(timeout: float = 15.0) -> list[int]:
    """Ask every job running in this process to stop and hand itself back; wait for them.

    Returns the ids of the jobs that were running.
    """
    stopping.set()
    with _running_lock:
        running = dict(_running)
    for token, _thread in running.values():
        token.set(JobCancelToken.STOPPING)
    deadline = time.monotonic() + timeout
    for job_id, (_token, done) in running.items():
        if not done.wait(max(0.0, deadline - time.monotonic())):
            logger.warning("job %s did not stop within %.0f s; the next start resumes it", job_id, timeout)
    return list(running)


class JobWatcher(threading.Thread):
    """Heartbeats the running job; notices a cancel or pause request, and the end of the
    hive's download window, within about a second."""

    def __init__(self, job: DownloadJob, token: JobCancelToken) -> None:
        super().__init__(name=f"job-{job.pk}-watcher", daemon=True)
        self.job = job
        self.token = token
        self.stopping = threading.Event()

    def run(self) -> None:
        try:
            hive = self.job.hive
            while not self.stopping.wait(0.5):
                beat = self.job.heartbeat()
                if beat == "ok":
                    hive.refresh_from_db(fields=["download_window"])
                    if hive.window_open():
                        continue
                    beat = "window"
                if beat == "lost":
                    logger.warning("job %s was taken over by another process; stopping here", self.job.pk)
                reasons = {
                    "lost": JobCancelToken.LOST,
                    "pause": JobCancelToken.PAUSED,
                    "window": JobCancelToken.WINDOW,
                }
                self.token.set(reasons.get(beat, JobCancelToken.CANCELLED))
                return
        except Exception:
            logger.exception("watcher of job %s stopped", self.job.pk)
        finally:
            connection.close()

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=5)


class JobProgress:
    """Turns fetch's byte counts into job progress, throttled narration and speed."""

    def __init__(self, job: DownloadJob, plan: Plan, token: JobCancelToken | None = None) -> None:
        self.job = job
        self.token = token
        # Every byte of the job passes here, from every part: the hive's cap acts here.
        self.bandwidth = bandwidth.for_hive(job.hive)
        self.total = plan.total_bytes
        self.file_bytes: dict[str, int] = {}
        self.finished: set[str] = set()
        self.interval = 1.0 / settings.RBEE_PROGRESS_EVENTS_PER_S
        self.last_emit = 0.0
        self.window_start = time.monotonic()
        self.window_bytes = 0
        self.speed: float | None = None
        self.current = ""
        self.lock = threading.Lock()

    @property
    def done(self) -> int:
        return sum(self.file_bytes.values())

    def advance(self, path: str, file_bytes: int) -> None:
        with self.lock:
            fresh = file_bytes - self.file_bytes.get(path, 0)
            self.window_bytes += fresh
            self.file_bytes[path] = file_bytes
            self.current = path
            now = time.monotonic()
            due = now - self.last_emit >= self.interval
        # Outside the lock: other parts go on while this one waits out the cap.
        self.bandwidth.consume(fresh, wait=self.token.wait if self.token else None)
        if due:
            self.emit(now)

    def emit(self, now: float | None = None) -> None:
        with self.lock:
            now = now or time.monotonic()
            elapsed = now - self.window_start
            if elapsed > 0 and self.window_bytes:
                sample = self.window_bytes / elapsed
                self.speed = sample if self.speed is None else 0.5 * self.speed + 0.5 * sample
            self.window_start, self.window_bytes, self.last_emit = now, 0, now
            done, speed, current = self.done, self.speed, self.current
        job = self.job
        job.record_progress(done, speed)
        eta = job.eta_s
        percent = job.percent or 0.0
        job.narrate(
            Action.PROGRESS,
            f"{percent:.1f}% — {human_bytes(done)} of {human_bytes(self.total)}"
            + (f" at {human_bytes(speed)}/s" if speed else "")
            + (f", {human_duration(eta)} left" if eta is not None else ""),
            target=current,
            fields={
                "bytes_done": done,
                "bytes_total": self.total,
                "file": current,
                "speed_bps": round(speed) if speed else None,
                "eta_s": round(eta, 1) if eta is not None else None,
            },
        )

    def file_done(self, path: str, size: int, sha256: str) -> None:
        with self.lock:
            self.file_bytes[path] = size
            if path in self.finished:
                return
            self.finished.add(path)
        self.job.narrate(
            Action.FILE_DONE,
            f"✓ {path} ({human_bytes(size)}, sha256 {sha256[:12]}…)",
            target=path,
            fields={"file": path, "size": size, "sha256": sha256},
        )

    def retry(self, path: str, reason: str, attempt: int, delay_s: float) -> None:
        self.job.narrate(
            Action.RETRY,
            f"{path}: {reason} — retrying in {delay_s:.0f} s (attempt {attempt + 1} of {settings.RBEE_DOWNLOAD_ATTEMPTS})",
            level="warn",
            target=path,
            fields={"file": path, "reason": reason, "attempt": attempt, "delay_s": delay_s},
        )

    def resumed(self, path: str, offset: int) -> None:
        with self.lock:
            if path in self.finished:
                return  # verified already (a peer served it): the fetch only checks it again
            self.file_bytes[path] = offset
        self.job.narrate(
            Action.RESUMED,
            f"Resuming {path} from {human_bytes(offset)} already on disk",
            target=path,
            fields={"file": path, "offset": offset},
        )

    def restarted(self, path: str, reason: str) -> None:
        with self.lock:
            self.file_bytes[path] = 0
        self.job.narrate(
            Action.RETRY,
            f"{path}: {reason}",
            level="warn",
            target=path,
            fields={"file": path, "reason": reason, "restart": True},
        )

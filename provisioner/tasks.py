"""The download task: one DownloadJob from queued to a finished state.

The task backend carries only the job id. What a restarted process needs to pick
up where the last one stopped (the plan, the bytes on disk) lives in the job row
and the job's partial folder.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.db.models import Q
from django.tasks import task
from django.utils import timezone

from catalog.models import Hive, ModelEntry, ModelFile
from provisioner.models import DownloadJob, worker_id
from provisioner.narration import narrate, push_job_created
from provisioner.references import Reference, UnsupportedReference, parse_reference
from provisioner.vendors import SUPPORTED_FORMS_TEXT, vendor_for
from provisioner.vendors.base import Cancelled, DiskFull, DownloadError, FetchResult, Plan, UnsafePath, inside
from rbee.formatting import human_bytes, human_duration

logger = logging.getLogger(__name__)

INSTALL_MARKER = ".rbee-install.json"


@task()
def run_download(job_id: int) -> None:
    try:
        run_job(job_id)
    finally:
        close_old_connections()


def enqueue(job: DownloadJob) -> None:
    """Hand the job to its hive's queue once the row that describes it is committed."""

    def send() -> None:
        run_download.using(queue_name=job.hive.name).enqueue(job.pk)

    transaction.on_commit(send)


def submit(reference: str, hive: Hive, user: object | None, plan: Plan | None = None) -> tuple[DownloadJob, bool]:
    """Queue a download (or return the active job for it) and announce it.

    ``plan``: what the admin was shown in the preview; the job downloads exactly
    that (same revision, same files) instead of asking the source again.
    """
    try:
        reference = parse_reference(reference).canonical
    except UnsupportedReference:
        pass  # queued as typed; the run narrates model_download_unsupported
    job, created = DownloadJob.submit(reference, hive, user)  # type: ignore[arg-type]
    if created:
        if plan is not None and plan.reference == reference:
            job.plan, job.bytes_total, job.revision = plan.to_json(), plan.total_bytes, plan.revision
            job.save(update_fields=["plan", "bytes_total", "revision", "updated_at"])
        narrate(
            job,
            "model_download_queued",
            f"Queued '{job.display_name}' on hive '{hive.name}'"
            + ("" if hive.is_online() else f" — hive '{hive.name}' is offline; the job waits for its worker"),
            fields={"hive": hive.name, "queue_position": job.queue_position()},
        )
        push_job_created(job)
        enqueue(job)
    return job, created


class JobCancelToken:
    """Set when the admin cancels; callbacks cut blocked sockets right away."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []
        # Set with the event when another worker took the job over: stop, touch nothing.
        self.lost = False

    def __call__(self) -> bool:
        return self._event.is_set()

    def wait(self, seconds: float) -> bool:
        return self._event.wait(seconds)

    def set(self) -> None:
        with self._lock:
            self._event.set()
            callbacks = list(self._callbacks)
        for callback in callbacks:
            try:
                callback()
            except Exception:
                logger.exception("cancel callback failed")

    def on_cancel(self, callback: Callable[[], None]) -> Callable[[], None]:
        with self._lock:
            self._callbacks.append(callback)
            already = self._event.is_set()
        if already:
            callback()

        def unhook() -> None:
            with self._lock:
                if callback in self._callbacks:
                    self._callbacks.remove(callback)

        return unhook


class JobWatcher(threading.Thread):
    """Heartbeats the running job and notices a cancel request within half a second.

    The heartbeat is conditional on this process still owning the job: a worker
    that stalled for longer than three heartbeats may find the job resumed by
    another worker, and must then stop without touching its files or state.
    """

    def __init__(self, job: DownloadJob, token: JobCancelToken) -> None:
        super().__init__(name=f"job-{job.pk}-watcher", daemon=True)
        self.job_id = job.pk
        self.worker = job.worker
        self.token = token
        self.stopping = threading.Event()

    def run(self) -> None:
        try:
            while not self.stopping.wait(0.5):
                mine = DownloadJob.objects.filter(pk=self.job_id, state=DownloadJob.RUNNING, worker=self.worker)
                if mine.filter(cancel_requested=False).update(heartbeat_at=timezone.now()):
                    continue
                if not mine.filter(cancel_requested=True).exists():
                    logger.warning("job %s was taken over by another worker; stopping here", self.job_id)
                    self.token.lost = True
                self.token.set()
                return
        except Exception:
            logger.exception("watcher of job %s stopped", self.job_id)
        finally:
            connection.close()

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=5)


class JobProgress:
    """Turns fetch's byte counts into job progress, throttled narration and speed."""

    def __init__(self, job: DownloadJob, plan: Plan) -> None:
        self.job = job
        self.total = plan.total_bytes
        self.sizes = {f.path: f.size for f in plan.files}
        self.file_bytes: dict[str, int] = {}
        self.finished: set[str] = set()
        self.interval = 1.0 / settings.RBEE_PROGRESS_EVENTS_PER_S
        self.last_emit = 0.0
        self.window_start = time.monotonic()
        self.window_bytes = 0
        self.speed: float | None = None
        self.current = ""

    @property
    def done(self) -> int:
        return sum(self.file_bytes.values())

    def advance(self, path: str, file_bytes: int) -> None:
        self.window_bytes += file_bytes - self.file_bytes.get(path, file_bytes)
        self.file_bytes[path] = file_bytes
        self.current = path
        now = time.monotonic()
        if now - self.last_emit >= self.interval:
            self.emit(now)

    def emit(self, now: float | None = None) -> None:
        now = now or time.monotonic()
        elapsed = now - self.window_start
        if elapsed > 0 and self.window_bytes:
            sample = self.window_bytes / elapsed
            self.speed = sample if self.speed is None else 0.5 * self.speed + 0.5 * sample
        self.window_start, self.window_bytes, self.last_emit = now, 0, now
        job = self.job
        job.bytes_done, job.speed_bps = self.done, self.speed
        DownloadJob.objects.filter(pk=job.pk).update(bytes_done=job.bytes_done, speed_bps=job.speed_bps)
        eta = job.eta_s
        percent = job.percent or 0.0
        narrate(
            job,
            "model_download_progress",
            f"{percent:.1f}% — {human_bytes(job.bytes_done)} of {human_bytes(self.total)}"
            + (f" at {human_bytes(self.speed)}/s" if self.speed else "")
            + (f", {human_duration(eta)} left" if eta is not None else ""),
            target=self.current,
            fields={
                "bytes_done": job.bytes_done,
                "bytes_total": self.total,
                "file": self.current,
                "speed_bps": round(self.speed) if self.speed else None,
                "eta_s": round(eta, 1) if eta is not None else None,
            },
        )

    def file_done(self, path: str, size: int, sha256: str) -> None:
        self.file_bytes[path] = size
        if path in self.finished:
            return
        self.finished.add(path)
        narrate(
            self.job,
            "model_download_file_done",
            f"✓ {path} ({human_bytes(size)}, sha256 {sha256[:12]}…)",
            target=path,
            fields={"file": path, "size": size, "sha256": sha256},
        )

    def retry(self, path: str, reason: str, attempt: int, delay_s: float) -> None:
        narrate(
            self.job,
            "model_download_retry",
            f"{path}: {reason} — retrying in {delay_s:.0f} s (attempt {attempt + 1} of {settings.RBEE_DOWNLOAD_ATTEMPTS})",
            level="warn",
            target=path,
            fields={"file": path, "reason": reason, "attempt": attempt, "delay_s": delay_s},
        )

    def resumed(self, path: str, offset: int) -> None:
        self.file_bytes[path] = offset
        narrate(
            self.job,
            "model_download_resumed",
            f"Resuming {path} from {human_bytes(offset)} already on disk",
            target=path,
            fields={"file": path, "offset": offset},
        )

    def restarted(self, path: str, reason: str) -> None:
        self.file_bytes[path] = 0
        narrate(
            self.job,
            "model_download_retry",
            f"{path}: {reason}",
            level="warn",
            target=path,
            fields={"file": path, "reason": reason, "restart": True},
        )


def _bytes_on_disk(partial: Path, plan: Plan) -> int:
    total = 0
    for planned in plan.files:
        try:
            total += min(planned.size, inside(partial, planned.path).stat().st_size)
        except (FileNotFoundError, DownloadError):
            continue
    return total


def _check_disk(job: DownloadJob, plan: Plan, models_dir: Path) -> None:
    """Refuse before the first byte when the download cannot fit, reserve included.

    A hard-linked import takes no space (a failed link falls back to copying).
    """
    if plan.extra.get("linked"):
        return
    models_dir.mkdir(parents=True, exist_ok=True)
    needed = plan.total_bytes - _bytes_on_disk(job.partial_dir, plan)
    free = shutil.disk_usage(models_dir).free
    usable = free - settings.RBEE_DISK_RESERVE
    if needed > usable:
        raise DiskFull(
            f"not enough disk space: needs {human_bytes(needed)}, {human_bytes(max(0, free))} free on "
            f"{models_dir} and {human_bytes(settings.RBEE_DISK_RESERVE)} is kept in reserve (RBEE_DISK_RESERVE)"
        )


def run_job(job_id: int) -> None:
    job = DownloadJob.objects.select_related("hive").filter(pk=job_id).first()
    if job is None or job.is_finished:
        return
    if job.hive.name != settings.RBEE_HIVE:
        # Only the hive's own worker writes to its disk; this process stands for another.
        logger.warning("job %s is for hive %s, not %s; leaving it queued", job.pk, job.hive.name, settings.RBEE_HIVE)
        return
    if not job.claim(worker_id()):
        return
    token = JobCancelToken()
    watcher = JobWatcher(job, token)
    watcher.start()
    try:
        _run(job, token)
    finally:
        watcher.stop()


def _run(job: DownloadJob, token: JobCancelToken) -> None:
    hive = job.hive
    models_dir = Path(hive.models_dir or settings.RBEE_MODELS_DIR)
    try:
        try:
            ref = parse_reference(job.reference)
            vendor = vendor_for(ref)
        except UnsupportedReference as exc:
            ref, vendor, reason = None, None, str(exc)
        else:
            reason = f"No vendor supports model '{job.reference}'. Supported formats: {SUPPORTED_FORMS_TEXT}"
        if vendor is None or ref is None:
            _finish(
                job, DownloadJob.FAILED, "model_download_unsupported", f"❌ {reason}",
                level="error", error=reason, error_kind="unsupported",
            )
            return
        job.vendor = vendor.name
        job.save(update_fields=["vendor", "updated_at"])
        if not job.events.filter(action="model_download_start").exists():
            narrate(
                job,
                "model_download_start",
                f"📥 Downloading model '{ref.display_name}' on hive '{hive.name}'",
                fields={"hive": hive.name, "vendor": vendor.name},
            )
        existing = ModelEntry.objects.filter(hive=hive, reference=job.reference).first()
        if existing:
            job.entry = existing
            _finish(
                job,
                DownloadJob.SUCCEEDED,
                "model_download_exists",
                f"⚠️ Model '{ref.display_name}' already exists in the catalog of hive '{hive.name}'; nothing downloaded",
                level="warn",
                fields={"entry_id": existing.pk},
            )
            return
        if job.plan:
            plan = Plan.from_json(job.plan)
        else:
            plan = vendor.plan(ref)
            job.plan, job.bytes_total, job.revision = plan.to_json(), plan.total_bytes, plan.revision
            job.save(update_fields=["plan", "bytes_total", "revision", "updated_at"])
        if not job.events.filter(action="model_download_plan").exists():
            narrate(
                job,
                "model_download_plan",
                f"Plan: {len(plan.files)} file(s), {human_bytes(plan.total_bytes)}"
                + (f" at revision {plan.revision.removeprefix('sha256:')[:12]}" if plan.revision else ""),
                fields={
                    "files": len(plan.files),
                    "bytes_total": plan.total_bytes,
                    "revision": plan.revision,
                },
            )
        _check_disk(job, plan, models_dir)
        progress = JobProgress(job, plan)
        on_disk = _bytes_on_disk(job.partial_dir, plan)
        if on_disk:
            narrate(
                job,
                "model_download_resumed",
                f"Resuming with {human_bytes(on_disk)} of {human_bytes(plan.total_bytes)} already on disk",
                fields={"bytes_done": on_disk, "bytes_total": plan.total_bytes},
            )
        job.partial_dir.mkdir(parents=True, exist_ok=True)
        fetched = vendor.fetch(plan, job.partial_dir, progress, token)
        if token():
            raise Cancelled()
        progress.emit()
        entry = _install(job, plan, ref, vendor.name, models_dir, fetched)
        job.entry = entry
        _finish(
            job,
            DownloadJob.SUCCEEDED,
            "model_download_complete",
            f"✅ Model '{ref.display_name}' downloaded successfully ({human_bytes(plan.total_bytes)})",
            fields={"entry_id": entry.pk, "bytes_total": plan.total_bytes, "path": entry.path},
        )
    except Cancelled:
        if token.lost:
            return  # the job, its files and its story belong to another worker now
        shutil.rmtree(job.partial_dir, ignore_errors=True)
        _finish(
            job, DownloadJob.CANCELLED, "model_download_cancelled", "⏹ Download cancelled; partial files removed", level="warn"
        )
    except DownloadError as exc:
        if not exc.retryable:
            shutil.rmtree(job.partial_dir, ignore_errors=True)
        _fail(job, str(exc), exc.kind)
    except Exception as exc:
        logger.exception("job %s failed unexpectedly", job.pk)
        shutil.rmtree(job.partial_dir, ignore_errors=True)
        _fail(job, f"internal error: {type(exc).__name__}: {exc}", "internal")


def _fail(job: DownloadJob, reason: str, kind: str) -> None:
    _finish(
        job,
        DownloadJob.FAILED,
        "model_download_failed",
        f"❌ Failed to download model '{job.display_name}': {reason}",
        level="error",
        fields={"error_kind": kind, "error": reason},
        error=reason,
        error_kind=kind,
    )


@transaction.atomic
def _finish(
    job: DownloadJob,
    state: str,
    action: str,
    human: str,
    *,
    level: str = "info",
    fields: dict[str, object] | None = None,
    error: str = "",
    error_kind: str = "",
) -> None:
    """The final state and its narration commit together: whoever sees one sees both."""
    job.state, job.error, job.error_kind = state, error, error_kind
    job.finished_at = timezone.now()
    job.speed_bps = None
    job.worker = ""
    if state == DownloadJob.SUCCEEDED and job.bytes_total is not None:
        job.bytes_done = job.bytes_total
    job.save(
        update_fields=[
            "state",
            "error",
            "error_kind",
            "finished_at",
            "speed_bps",
            "worker",
            "bytes_done",
            "entry",
            "updated_at",
        ]
    )
    narrate(job, action, human, level=level, fields=fields)


def _install(
    job: DownloadJob, plan: Plan, ref: Reference, vendor: str, models_dir: Path, fetched: FetchResult
) -> ModelEntry:
    """Move the verified files into place, then write the entry: the entry comes last."""
    final = _install_folder(job, ref, models_dir)
    final.parent.mkdir(parents=True, exist_ok=True)
    # The marker says "moved, entry not yet written": start-up repair looks for it.
    marker = job.partial_dir / INSTALL_MARKER
    marker.write_text(json.dumps({"job": job.pk, "reference": job.reference}))
    os.replace(job.partial_dir, final)
    with transaction.atomic():
        entry = ModelEntry.objects.create(
            hive=job.hive,
            reference=job.reference,
            name=ref.display_name,
            vendor=vendor,
            revision=plan.revision,
            path=str(final),
            models_root=str(models_dir.resolve()),
            size_bytes=plan.total_bytes,
            file_count=len(plan.files),
            linked=fetched.linked,
        )
        ModelFile.objects.bulk_create(
            ModelFile(
                entry=entry,
                path=f.path,
                size_bytes=f.size,
                sha256=fetched.sha256.get(f.path, f.sha256 or ""),
                media_type=f.media_type,
            )
            for f in plan.files
        )
    (final / INSTALL_MARKER).unlink(missing_ok=True)
    return entry


def _install_folder(job: DownloadJob, ref: Reference, models_dir: Path) -> Path:
    """The folder this job's files move to: strictly inside its vendor's area, and free.

    Only a leftover of this very job (its own install marker) is ever removed. A folder
    that anything else owns, or that is an entry's folder or holds one, is left alone
    and the files go to a fresh sibling folder instead: an install never replaces data
    it did not write.
    """
    root = models_dir.resolve()
    area = (root / ref.folder.split("/", 1)[0]).resolve()
    wanted = (root / ref.folder).resolve()
    if wanted == area or not wanted.is_relative_to(area):
        raise UnsafePath(f"refusing to install outside the {area.name} area of the models dir: {wanted}")
    for n in range(1, 100):
        final = wanted if n == 1 else wanted.with_name(f"{wanted.name}.{n}")
        if _owned_by_job(final, job):
            shutil.rmtree(final)
        if not final.exists() and not _overlaps_an_entry(job.hive, root, final):
            return final
        logger.warning("job %s: %s is taken; trying the next free folder", job.pk, final)
    raise DownloadError(f"no free folder for {ref.folder} below {root}", kind="conflict")


def _owned_by_job(folder: Path, job: DownloadJob) -> bool:
    try:
        return json.loads((folder / INSTALL_MARKER).read_text()).get("job") == job.pk
    except (OSError, ValueError, AttributeError):
        return False


def _overlaps_an_entry(hive: Hive, root: Path, folder: Path) -> bool:
    """Whether an entry on this disk has this folder, or one inside it or around it."""
    neighbours = ModelEntry.objects.filter(Q(hive=hive) | Q(models_root=str(root)))
    for path in neighbours.values_list("path", flat=True):
        other = Path(path)
        if other.is_relative_to(folder) or folder.is_relative_to(other):
            return True
    return False

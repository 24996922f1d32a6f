"""The download task: one DownloadJob from queued to a finished state.

The task backend carries only the job id. What a restarted process needs to pick
up where the last one stopped (the plan, the bytes on disk) lives in the job row
and the job's partial folder; what happens at each step of the life cycle is a
``DownloadJob`` method.
"""

from __future__ import annotations

import logging
import shutil

from django.db import close_old_connections
from django.tasks import task

from catalog.models import Hive, ModelEntry
from provisioner import peers, running
from provisioner.disks import link_known_files, make_room, run_entry_job
from provisioner.install import install
from provisioner.models import Action, DownloadJob, this_process
from provisioner.references import UnsupportedReference, parse_reference
from provisioner.running import JobCancelToken, JobProgress, JobWatcher
from provisioner.vendors import SUPPORTED_FORMS_TEXT, vendor_for
from provisioner.vendors.base import Cancelled, DiskFull, DownloadError, Plan, inside
from provisioner.vendors.huggingface import HuggingFaceVendor
from rbee.formatting import human_bytes

logger = logging.getLogger(__name__)


@task()
def run_download(job_id: int) -> None:
    try:
        run_job(job_id)
    finally:
        close_old_connections()


def send_to_queue(job_id: int, queue: str) -> None:
    running.sent.add(job_id)
    run_download.using(queue_name=queue).enqueue(job_id)


def run_job(job_id: int) -> None:
    try:
        _run_job(job_id)
    finally:
        running.sent.discard(job_id)


def _run_job(job_id: int) -> None:
    job = DownloadJob.objects.select_related("hive").filter(pk=job_id).first()
    if job is None or job.is_finished:
        return
    if job.hive.name != Hive.current_name():
        # Only the hive's own worker writes to its disk; this process stands for another.
        logger.warning("job %s is for hive %s, not %s; leaving it queued", job.pk, job.hive, Hive.current_name())
        return
    if running.stopping.is_set():
        return  # the process is on its way out: the job stays queued for the next start
    if not job.claim(this_process()):
        return
    token = JobCancelToken()
    running.register(job.pk, token)
    watcher = JobWatcher(job, token)
    watcher.start()
    try:
        _run(job, token)
    finally:
        watcher.stop()
        running.unregister(job.pk)


def _run(job: DownloadJob, token: JobCancelToken) -> None:
    try:
        _download(job, token)
    except Cancelled:
        _stopped(job, token)
    except DownloadError as exc:
        if not exc.retryable:
            shutil.rmtree(job.partial_dir, ignore_errors=True)
        job.fail(str(exc), exc.kind)
    except Exception as exc:
        if token():
            _stopped(job, token)  # an interrupted step failing on its way out
            return
        logger.exception("job %s failed unexpectedly", job.pk)
        shutil.rmtree(job.partial_dir, ignore_errors=True)
        job.fail(f"internal error: {type(exc).__name__}", "internal")


def _stopped(job: DownloadJob, token: JobCancelToken) -> None:
    """Why the job stopped decides what becomes of it and of its partial files."""
    if token.reason == JobCancelToken.LOST:
        return  # the job, its files and its story belong to another process now
    if token.reason == JobCancelToken.STOPPING:
        job.hand_back(
            f"The server of hive '{job.hive.name}' stopped; the download resumes from the "
            f"{human_bytes(_bytes_on_disk(job))} on disk when it starts again",
            requeue=False,
        )
        return
    if token.reason == JobCancelToken.PAUSED:
        job.paused()
        return
    if token.reason == JobCancelToken.WINDOW:
        window = job.hive.window
        job.hand_back(
            f"Waiting for the download window {window.label if window else ''} of hive '{job.hive.name}'; "
            f"{human_bytes(_bytes_on_disk(job))} on disk are kept",
            action=Action.WAITING,
            window=job.hive.download_window,
        )
        return
    shutil.rmtree(job.partial_dir, ignore_errors=True)
    job.finish(
        DownloadJob.CANCELLED, Action.CANCELLED, "⏹ Download cancelled; partial files removed", level="warn"
    )


def _download(job: DownloadJob, token: JobCancelToken) -> None:
    if job.kind != DownloadJob.DOWNLOAD:
        run_entry_job(job, token)  # verify, repair, update: provisioner/disks.py
        return
    hive = job.hive
    try:
        ref = parse_reference(job.reference)
        vendor = vendor_for(ref)
    except UnsupportedReference as exc:
        ref, vendor, reason = None, None, str(exc)
    else:
        reason = f"No vendor supports model '{job.reference}'. Supported formats: {SUPPORTED_FORMS_TEXT}"
    if vendor is None or ref is None:
        job.finish(
            DownloadJob.FAILED, Action.UNSUPPORTED, f"❌ {reason}", level="error", error=reason,
            error_kind="unsupported",
        )
        return
    if isinstance(vendor, HuggingFaceVendor):
        vendor = HuggingFaceVendor(endpoints=hive.hf_endpoint_list())  # the hive's mirrors, in its order
    job.vendor = vendor.name
    job.save(update_fields=["vendor", "updated_at"])
    if not job.events.filter(action=Action.START).exists():
        job.narrate(
            Action.START,
            f"📥 Downloading model '{ref.display_name}' on hive '{hive.name}'",
            fields={"hive": hive.name, "vendor": vendor.name},
        )
    existing = ModelEntry.objects.filter(hive=hive, reference=job.reference).first()
    if existing is not None and existing.check_files() == ModelEntry.STATUS_READY:
        job.finish(
            DownloadJob.SUCCEEDED,
            Action.EXISTS,
            f"⚠️ Model '{ref.display_name}' already exists in the catalog of hive '{hive.name}'; nothing downloaded",
            level="warn",
            fields={"entry_id": existing.pk},
            entry=existing,
        )
        return
    plan = _plan(job, vendor, ref)
    on_disk = _bytes_on_disk(job)
    if not plan.extra.get("linked"):
        # Bytes the hive already holds are linked, not fetched; room is made for the rest.
        link_known_files(job, plan)
        make_room(job, plan.total_bytes - _bytes_on_disk(job), keep=(existing.pk,) if existing else ())
    _check_disk(job, plan)
    if on_disk:
        job.narrate(
            Action.RESUMED,
            f"Resuming with {human_bytes(on_disk)} of {human_bytes(plan.total_bytes)} already on disk",
            fields={"bytes_done": on_disk, "bytes_total": plan.total_bytes},
        )
    job.partial_dir.mkdir(parents=True, exist_ok=True)
    progress = JobProgress(job, plan, token)
    peers.prefill(job, plan, progress, token, origin=vendor.label)
    fetched = vendor.fetch(plan, job.partial_dir, progress, token)
    if token():
        raise Cancelled()
    progress.emit()
    job.record_origin_bytes(plan.total_bytes)
    entry = install(job, plan, ref, dict(fetched.sha256), linked=fetched.linked, replacing=existing)
    job.finish(
        DownloadJob.SUCCEEDED,
        Action.COMPLETE,
        f"✅ Model '{ref.display_name}' downloaded successfully ({human_bytes(plan.total_bytes)})",
        fields={"entry_id": entry.pk, "bytes_total": plan.total_bytes, "path": entry.path},
        entry=entry,
    )


def _plan(job: DownloadJob, vendor: object, ref: object) -> Plan:
    """The job's plan: fixed once (by the preview or the first run), then kept for resumes."""
    if job.plan:
        plan = Plan.from_json(job.plan)
    else:
        plan = vendor.plan(ref)  # type: ignore[attr-defined]
        job.plan, job.bytes_total, job.revision = plan.to_json(), plan.total_bytes, plan.revision
        job.save(update_fields=["plan", "bytes_total", "revision", "updated_at"])
    if not job.events.filter(action=Action.PLAN).exists():
        for notice in plan.extra.get("notices", []):
            job.narrate(Action.RETRY, f"🔁 {notice[:1].upper()}{notice[1:]}", level="warn", fields={"reason": notice})
        job.narrate(
            Action.PLAN,
            f"Plan: {len(plan.files)} file(s), {human_bytes(plan.total_bytes)}"
            + (f" at revision {plan.revision.removeprefix('sha256:')[:12]}" if plan.revision else ""),
            fields={"files": len(plan.files), "bytes_total": plan.total_bytes, "revision": plan.revision},
        )
    return plan


def _bytes_on_disk(job: DownloadJob) -> int:
    """Bytes of the plan already written: blocks allocated, since a file fetched in
    parallel parts is sparse and its size says nothing about what arrived."""
    if not job.plan:
        return 0
    total = 0
    for planned in Plan.from_json(job.plan).files:
        try:
            stat = inside(job.partial_dir, planned.path).stat()
        except (FileNotFoundError, DownloadError):
            continue
        total += min(planned.size, stat.st_size, stat.st_blocks * 512)
    return total


def _check_disk(job: DownloadJob, plan: Plan) -> None:
    """Refuse before the first byte when the download cannot fit, reserve included.

    A hard-linked import takes no space (a failed link falls back to copying).
    """
    if plan.extra.get("linked"):
        return
    needed = plan.total_bytes - _bytes_on_disk(job)
    usable = job.hive.usable_bytes()
    if usable is not None and needed > usable:
        raise DiskFull(
            f"not enough disk space: needs {human_bytes(needed)}, {human_bytes(usable)} of the free space on "
            f"{job.hive.path} is usable once the reserve (RBEE_DISK_RESERVE) is kept"
        )

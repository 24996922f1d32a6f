"""What a hive does when its worker starts: nothing lost, nothing half-written.

Runs in the embedded web process at start, and in each scaled hive worker for its
own hive. Repairs the crash windows of an install (files moved but entry not
written), drops partial folders nobody owns, and puts every unfinished job back
on the queue so it resumes from the bytes on disk.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from catalog.models import Hive, ModelEntry, ModelFile
from provisioner.models import DownloadJob
from provisioner.narration import narrate
from provisioner.tasks import INSTALL_MARKER, enqueue
from provisioner.vendors.base import DownloadError, Plan, inside
from rbee.formatting import human_bytes

logger = logging.getLogger(__name__)


def models_dir_of(hive: Hive) -> Path:
    return Path(hive.models_dir or settings.RBEE_MODELS_DIR)


def recover_hive(hive: Hive, *, sole_worker: bool) -> list[int]:
    """Repair the hive's disk and requeue its unfinished jobs; returns the job ids queued.

    ``sole_worker``: this process is the only one that runs the hive's jobs (the
    embedded default), so every running job is an orphan. Otherwise only jobs whose
    heartbeat stopped are.
    """
    models_dir = models_dir_of(hive)
    models_dir.mkdir(parents=True, exist_ok=True)
    repair_installs(hive, models_dir, sole_worker=sole_worker)
    remove_orphan_partials(hive, models_dir)
    mark_missing_entries(hive)
    return requeue_jobs(hive, sole_worker=sole_worker)


def repair_installs(hive: Hive, models_dir: Path, *, sole_worker: bool = True) -> None:
    """A crash between moving files into place and writing the entry leaves a marker.

    With other workers on the hive, a marker can also be an install happening right
    now: a job whose worker still heartbeats is left to that worker.
    """
    for root, dirs, files in os.walk(models_dir):
        if Path(root) == models_dir and ".partial" in dirs:
            dirs.remove(".partial")
        if INSTALL_MARKER not in files:
            continue
        folder = Path(root)
        marker = folder / INSTALL_MARKER
        dirs.clear()
        try:
            info = json.loads(marker.read_text())
            job = DownloadJob.objects.filter(pk=info["job"], hive=hive).first()
        except (ValueError, KeyError, OSError):
            job = None
        if not sole_worker and job is not None and _is_live(job):
            continue
        entry = ModelEntry.objects.filter(hive=hive, path=str(folder)).first()
        if entry:
            marker.unlink(missing_ok=True)
            if job and job.is_active:
                _complete_recovered(job, entry)
            continue
        if job is not None and job.plan and _files_match_plan(folder, Plan.from_json(job.plan)):
            entry = _recover_entry(job, folder)
            marker.unlink(missing_ok=True)
            _complete_recovered(job, entry)
            logger.info("recovered catalog entry for %s at %s", job.reference, folder)
            continue
        logger.warning("removing %s: installed by a crashed job and not verifiable", folder)
        shutil.rmtree(folder, ignore_errors=True)


def _files_match_plan(folder: Path, plan: Plan) -> bool:
    try:
        return all(inside(folder, f.path).stat().st_size == f.size for f in plan.files)
    except (OSError, DownloadError):
        return False


def _recover_entry(job: DownloadJob, folder: Path) -> ModelEntry:
    from provisioner.references import parse_reference
    from provisioner.vendors.transfer import hash_file

    plan = Plan.from_json(job.plan or {})
    ref = parse_reference(job.reference)
    with transaction.atomic():
        entry = ModelEntry.objects.create(
            hive=job.hive,
            reference=job.reference,
            name=ref.display_name,
            vendor=plan.vendor,
            revision=plan.revision,
            path=str(folder),
            models_root=str(job.hive.path.resolve()),
            size_bytes=plan.total_bytes,
            file_count=len(plan.files),
            linked=bool(plan.extra.get("linked")),
        )
        ModelFile.objects.bulk_create(
            ModelFile(
                entry=entry,
                path=f.path,
                size_bytes=f.size,
                sha256=hash_file(inside(folder, f.path)).hexdigest(),
                media_type=f.media_type,
            )
            for f in plan.files
        )
    return entry


def _complete_recovered(job: DownloadJob, entry: ModelEntry) -> None:
    job.entry, job.state, job.finished_at = entry, DownloadJob.SUCCEEDED, timezone.now()
    job.bytes_done = job.bytes_total or entry.size_bytes
    job.worker = ""
    job.save(update_fields=["entry", "state", "finished_at", "bytes_done", "worker", "updated_at"])
    narrate(
        job,
        "model_download_complete",
        f"✅ Model '{entry.name}' was installed before the restart; catalog entry recovered "
        f"({human_bytes(entry.size_bytes)})",
        fields={"entry_id": entry.pk, "recovered": True},
    )


def remove_orphan_partials(hive: Hive, models_dir: Path) -> None:
    """Partial folders are kept only for jobs that may still resume."""
    partial_root = models_dir / ".partial"
    if not partial_root.is_dir():
        return
    keep = set(
        DownloadJob.objects.filter(hive=hive)
        .exclude(state__in=(DownloadJob.SUCCEEDED, DownloadJob.CANCELLED))
        .exclude(state=DownloadJob.FAILED, error_kind__in=("verification", "unsafe_path", "disk_full", "internal"))
        .values_list("pk", flat=True)
    )
    for child in partial_root.iterdir():
        if child.name.isdigit() and int(child.name) in keep:
            continue
        logger.info("removing orphaned partial download %s", child)
        if child.is_dir():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def mark_missing_entries(hive: Hive) -> None:
    """An entry whose folder vanished is shown as missing, not silently dropped."""
    for entry in ModelEntry.objects.filter(hive=hive):
        status = ModelEntry.STATUS_READY if Path(entry.path).is_dir() else ModelEntry.STATUS_MISSING
        if status != entry.status:
            entry.status = status
            entry.save(update_fields=["status", "updated_at"])


def _stale_before() -> datetime:
    return timezone.now() - timedelta(seconds=settings.RBEE_HEARTBEAT_S * 3)


def _is_live(job: DownloadJob) -> bool:
    return job.state == DownloadJob.RUNNING and job.heartbeat_at is not None and job.heartbeat_at >= _stale_before()


def requeue_jobs(hive: Hive, *, sole_worker: bool) -> list[int]:
    """Put the hive's orphaned running jobs back in the queue; returns the job ids sent.

    Not the sole worker: an orphan is a running job whose heartbeat stopped, and the
    update checks that again, so a job another worker claimed a moment ago (fresh
    heartbeat) is never taken from it. Hive workers run this every heartbeat.
    """
    running = DownloadJob.objects.filter(hive=hive, state=DownloadJob.RUNNING)
    if sole_worker:
        orphans = list(running.values_list("pk", flat=True))
        if orphans:
            running.filter(pk__in=orphans).update(state=DownloadJob.QUEUED, worker="", speed_bps=None)
    else:
        orphans = []
        stale = Q(heartbeat_at__lt=_stale_before()) | Q(heartbeat_at__isnull=True)
        for pk in running.filter(stale).values_list("pk", flat=True):
            if running.filter(stale, pk=pk).update(state=DownloadJob.QUEUED, worker="", speed_bps=None):
                orphans.append(pk)
    if sole_worker:
        # The in-process pool forgets its queue on exit: everything queued is sent again.
        todo = list(
            DownloadJob.objects.filter(hive=hive, state=DownloadJob.QUEUED)
            .order_by("created_at", "pk")
            .values_list("pk", flat=True)
        )
    else:
        todo = orphans
    for job in DownloadJob.objects.select_related("hive").filter(pk__in=todo).order_by("created_at", "pk"):
        with transaction.atomic():
            enqueue(job)
    return todo


def hand_back_jobs(hive: Hive, worker: str) -> list[int]:
    """A hive worker that stops on purpose gives its running jobs back to the queue.

    The next worker of the hive resumes them from the bytes on disk at once, instead
    of after three missed heartbeats as for a worker that died.
    """
    handed_back = []
    for job in DownloadJob.objects.select_related("hive").filter(hive=hive, state=DownloadJob.RUNNING, worker=worker):
        if not DownloadJob.objects.filter(pk=job.pk, state=DownloadJob.RUNNING, worker=worker).update(
            state=DownloadJob.QUEUED, worker="", speed_bps=None, heartbeat_at=None
        ):
            continue
        job.state, job.worker, job.speed_bps, job.heartbeat_at = DownloadJob.QUEUED, "", None, None
        # Told before it is queued again, so the story reads in order on the job page.
        narrate(
            job,
            "model_download_queued",
            f"The worker of hive '{hive.name}' stopped; the job waits for its next worker and resumes "
            f"from the bytes on disk",
            level="warn",
            fields={"hive": hive.name, "requeued": True, "worker": worker},
        )
        enqueue(job)
        handed_back.append(job.pk)
    return handed_back

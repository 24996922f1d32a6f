"""What a hive does when its worker starts: nothing lost, nothing half-written.

Runs in the embedded web process at start, and in each scaled hive worker for its
own hive (and every heartbeat there, for jobs of workers that died). Finishes or
undoes crashed installs, drops partial folders nobody owns, marks entries whose
files vanished, and puts every unfinished job back on the queue so it resumes
from the bytes on disk.
"""

from __future__ import annotations

import logging
import shutil

from catalog.models import Hive, ModelEntry
from provisioner.install import repair_installs
from provisioner.models import DownloadJob, stale_before

logger = logging.getLogger(__name__)

# Failures whose partial files can never be resumed from.
_UNRESUMABLE = ("verification", "unsafe_path", "disk_full", "internal")


def recover_hive(hive: Hive, *, sole_worker: bool) -> list[int]:
    """Repair the hive's disk and requeue its unfinished jobs; returns the job ids queued.

    ``sole_worker``: this process is the only one that runs the hive's jobs (the
    embedded default), so every running job is an orphan. Otherwise only jobs whose
    heartbeat stopped are.
    """
    hive.path.mkdir(parents=True, exist_ok=True)
    repair_installs(hive, sole_worker=sole_worker)
    remove_orphan_partials(hive)
    ModelEntry.objects.filter(hive=hive).check_files()
    requeue_jobs(hive, sole_worker=sole_worker)
    return list(DownloadJob.objects.filter(hive=hive, state=DownloadJob.QUEUED).values_list("pk", flat=True))


def remove_orphan_partials(hive: Hive) -> None:
    """Partial folders are kept only for jobs that may still resume."""
    partial_root = hive.path / ".partial"
    if not partial_root.is_dir():
        return
    keep = set(
        DownloadJob.objects.filter(hive=hive)
        .exclude(state__in=(DownloadJob.SUCCEEDED, DownloadJob.CANCELLED))
        .exclude(state=DownloadJob.FAILED, error_kind__in=_UNRESUMABLE)
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


def requeue_jobs(hive: Hive, *, sole_worker: bool) -> list[int]:
    """Put the hive's orphaned running jobs back in the queue and send what may run.

    Not the sole worker: an orphan is a running job whose heartbeat stopped, and the
    update checks that again, so a job another worker claimed a moment ago (fresh
    heartbeat) is never taken from it. The sole worker (the embedded server, at start)
    also forgets every send of the process before it: its queue lived in memory.
    Returns the ids of the orphans put back.
    """
    jobs = DownloadJob.objects.filter(hive=hive)
    running = jobs.filter(state=DownloadJob.RUNNING) if sole_worker else jobs.orphaned()
    orphans = []
    for pk in running.values_list("pk", flat=True):
        if running.filter(pk=pk).update(state=DownloadJob.QUEUED, process="", speed_bps=None, dispatched_at=None):
            orphans.append(pk)
    if sole_worker:
        jobs.filter(state=DownloadJob.QUEUED).update(dispatched_at=None)
    DownloadJob.dispatch(hive)
    return orphans


def adopt_waiting_jobs(hive: Hive, already_sent: set[int]) -> list[int]:
    """The embedded server's heartbeat: orphans of processes that died (a command line
    killed mid-pull) and jobs sent to a queue that died with its process go back to
    waiting; then what may run now is sent (an opened window, a freed slot, a job a
    command line queued with ``--no-follow``)."""
    requeued = requeue_jobs(hive, sole_worker=False)
    lost_sends = DownloadJob.objects.filter(
        hive=hive, state=DownloadJob.QUEUED, dispatched_at__lt=stale_before()
    ).exclude(pk__in=list(already_sent))
    lost_sends.update(dispatched_at=None)
    return requeued + DownloadJob.dispatch(hive)


def hand_back_jobs(hive: Hive, process: str) -> list[int]:
    """A hive worker that stops on purpose gives its running jobs back to the queue."""
    handed_back = []
    for job in DownloadJob.objects.select_related("hive").filter(hive=hive, state=DownloadJob.RUNNING, process=process):
        if job.hand_back(
            f"The worker of hive '{hive.name}' stopped; the job waits for its next worker and resumes "
            f"from the bytes on disk",
            hive=hive.name,
        ):
            handed_back.append(job.pk)
    return handed_back

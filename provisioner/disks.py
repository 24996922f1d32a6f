"""A hive's disk after the download: room, shared bytes, integrity and updates.

Making room evicts idle, unpinned entries (narrated on the job that needed the room);
identical files are hard links, never second copies; verify, repair and update are
jobs like downloads, run by the hive's worker on its own disk, narrated step by step.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from catalog.models import Hive, ModelEntry, ModelFile
from provisioner.install import INSTALL_MARKER, _install_folder, _records
from provisioner.models import Action, DownloadJob
from provisioner.references import HuggingFaceRef, OllamaRef, Reference, UnsupportedReference, parse_reference
from provisioner.running import JobCancelToken, JobProgress
from provisioner.vendors import vendor_for
from provisioner.vendors.base import Cancelled, DiskFull, DownloadError, NotFound, Plan, PlannedFile, inside
from provisioner.vendors.transfer import HASH_BLOCK
from rbee.formatting import human_bytes

logger = logging.getLogger(__name__)

_COMMIT_SHA_LENGTH = 40


# -- room on the disk -----------------------------------------------------------------


def make_room(job: DownloadJob, needed: int, *, keep: tuple[int, ...] = ()) -> None:
    """Before the first byte: evict what the watermarks ask for, or refuse the job.

    Raises DiskFull naming what blocks (pinned, recently used, served entries) when
    evicting everything allowed would still leave the download past the high mark or
    without room; then nothing was evicted.
    """
    hive = job.hive
    plan = hive.eviction_plan(needed, keep=keep)
    if plan.to_free <= 0:
        return
    if not plan.fits:
        usable = hive.usable_bytes() or 0
        if needed > usable + plan.freed:
            why = (
                f"{human_bytes(usable)} of the free space on {hive.path} is usable once the reserve "
                f"(RBEE_DISK_RESERVE) is kept"
            )
        else:
            why = f"the disk would pass its high watermark ({hive.high_watermark_percent}%)"
        raise DiskFull(
            f"not enough disk space: needs {human_bytes(needed)}; {why}. Evicting every idle unpinned entry "
            f"frees {human_bytes(plan.freed)} of the {human_bytes(plan.to_free)} wanted; blocking: "
            f"{plan.blocking_text()}"
        )
    for entry in plan.victims:
        evict(entry, job)


def evict(entry: ModelEntry, job: DownloadJob) -> bool:
    """Remove an idle, unpinned entry to make room for ``job``; False when it is not
    evictable any more.

    The delete is conditional, so an entry pinned or used since the plan was made
    stays: the database decides, not a check made earlier in Python.
    """
    idle_before = timezone.now() - timedelta(seconds=settings.RBEE_EVICT_MIN_IDLE_S)
    try:
        return _evict(entry, job, idle_before)
    except (OSError, ValueError) as exc:
        # The entry stays (the transaction rolled back); the disk check after says whether it mattered.
        logger.warning("job %s: could not evict %s: %s", job.pk, entry.name, exc)
        return False


def _evict(entry: ModelEntry, job: DownloadJob, idle_before: Any) -> bool:
    with transaction.atomic():
        deleted, _ = (
            ModelEntry.objects.filter(pk=entry.pk, pinned=False)
            .filter(Q(last_used_at__lt=idle_before) | Q(last_used_at__isnull=True, created_at__lt=idle_before))
            .delete()
        )
        if not deleted:
            return False
        entry.delete_files()  # raises, and the entry stays, when its folder is not its own
        idle = entry.idle_since
        job.narrate(
            Action.EVICTED,
            f"🧹 Evicted '{entry.name}' ({human_bytes(entry.size_bytes)}, last used "
            f"{idle:%Y-%m-%d %H:%M} UTC) to make room on hive '{job.hive.name}'",
            target=entry.reference,
            fields={"entry_id": entry.pk, "bytes": entry.size_bytes, "idle_since": idle.isoformat()},
        )
    return True


# -- one copy of identical bytes ------------------------------------------------------


def link_known_files(job: DownloadJob, plan: Plan) -> int:
    """Hard-link planned files whose sha256 the hive already holds into the job's partial
    folder, so the transfer finds them complete and only verifies them. Returns the
    bytes not downloaded.

    Only a file at exactly the planned size is linked: a shorter one would be resumed,
    and the transfer would append to bytes another entry owns.
    """
    saved = 0
    for planned in plan.files:
        if not planned.sha256:
            continue
        target = inside(job.partial_dir, planned.path)
        if target.exists():
            continue
        source = _file_with_content(job.hive, planned.sha256, planned.size)
        if source is None:
            continue
        path, entry = source
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, target)
        except OSError as exc:  # another filesystem, or a filesystem without hard links
            logger.info("job %s: could not link %s to %s: %s", job.pk, path, target, exc)
            continue
        saved += planned.size
        job.narrate(
            Action.LINKED,
            f"🔗 {planned.path}: the same bytes are already on disk in '{entry.name}'; linked instead of "
            f"downloaded ({human_bytes(planned.size)} saved)",
            target=planned.path,
            fields={"file": planned.path, "bytes_saved": planned.size, "entry_id": entry.pk},
        )
    return saved


def _file_with_content(hive: Hive, sha256: str, size: int) -> tuple[Path, ModelEntry] | None:
    rows = ModelFile.objects.filter(entry__hive=hive, sha256=sha256.lower(), size_bytes=size).select_related("entry")
    for row in rows:
        try:
            path = inside(Path(row.entry.path), row.path)
            if path.stat().st_size == size:
                return path, row.entry
        except (OSError, DownloadError):
            continue
    return None


# -- verify and repair ----------------------------------------------------------------


def run_entry_job(job: DownloadJob, token: JobCancelToken) -> None:
    """A verify, repair or update job, from claimed to finished."""
    entry = job.entry
    if entry is None:
        raise NotFound(f"the catalog entry of {job.reference} is gone", kind="not_found")
    if job.kind == DownloadJob.VERIFY:
        _verify(job, entry, token)
    elif job.kind == DownloadJob.REPAIR:
        _repair(job, entry, token)
    elif job.kind == DownloadJob.UPDATE:
        _update(job, entry, token)


def _entry_plan(entry: ModelEntry, paths: set[str] | None = None) -> Plan:
    files = [
        PlannedFile(path=f.path, size=f.size_bytes, sha256=f.sha256 or None)
        for f in entry.files.all()
        if paths is None or f.path in paths
    ]
    return Plan(vendor=entry.vendor, reference=entry.reference, revision=entry.revision, files=files)


def check_entry_files(entry: ModelEntry, plan: Plan, progress: JobProgress, token: JobCancelToken) -> tuple[list[str], list[str]]:
    """Re-hash the planned files of the entry: (damaged, missing) paths."""
    damaged, missing = [], []
    folder = Path(entry.path)
    for planned in plan.files:
        try:
            path = inside(folder, planned.path)
            size = path.stat().st_size
        except (OSError, DownloadError):
            missing.append(planned.path)
            progress.advance(planned.path, planned.size)
            continue
        if size != planned.size:
            damaged.append(planned.path)
            progress.advance(planned.path, planned.size)
            continue
        hasher, done = hashlib.sha256(), 0
        with open(path, "rb", buffering=0) as f:
            while block := f.read(HASH_BLOCK):
                if token():
                    raise Cancelled()
                hasher.update(block)
                done += len(block)
                progress.advance(planned.path, done)
        if planned.sha256 and hasher.hexdigest() != planned.sha256.lower():
            damaged.append(planned.path)
    return damaged, missing


def _start(job: DownloadJob, plan: Plan, action: Action, human: str) -> JobProgress:
    job.bytes_total, job.vendor = plan.total_bytes, job.entry.vendor if job.entry else job.vendor
    job.save(update_fields=["bytes_total", "vendor", "updated_at"])
    job.narrate(action, human, fields={"files": len(plan.files), "bytes_total": plan.total_bytes})
    return JobProgress(job, plan)


def _verify(job: DownloadJob, entry: ModelEntry, token: JobCancelToken) -> None:
    plan = _entry_plan(entry)
    progress = _start(
        job, plan, Action.VERIFY_START,
        f"🔍 Verifying {len(plan.files)} file(s) of '{entry.name}' ({human_bytes(plan.total_bytes)}) against their sha256",
    )
    damaged, missing = check_entry_files(entry, plan, progress, token)
    progress.emit()
    entry.record_integrity(damaged, missing)
    _finish_check(job, entry, damaged, missing)


def _finish_check(job: DownloadJob, entry: ModelEntry, damaged: list[str], missing: list[str]) -> None:
    if entry.integrity == ModelEntry.INTEGRITY_OK:
        human, level = f"✅ '{entry.name}' is intact: every file matches its recorded sha256", "info"
    else:
        parts = ([f"damaged: {', '.join(damaged)}"] if damaged else []) + (
            [f"missing: {', '.join(missing)}"] if missing else []
        )
        human, level = f"⚠️ '{entry.name}' is {entry.integrity} — {'; '.join(parts)}", "warn"
    job.finish(
        DownloadJob.SUCCEEDED,
        Action.VERIFY_COMPLETE,
        human,
        level=level,
        fields={"integrity": entry.integrity, "damaged": damaged, "missing": missing, "entry_id": entry.pk},
        entry=entry,
    )


def _source_plan(entry: ModelEntry, *, at_recorded_revision: bool) -> tuple[Reference, Plan]:
    ref = parse_reference(entry.reference)
    vendor = vendor_for(ref)
    if vendor is None:
        raise DownloadError(f"no vendor supports {entry.reference}", kind="unsupported")
    asked = ref
    if at_recorded_revision and isinstance(ref, HuggingFaceRef) and entry.revision:
        asked = dataclasses.replace(ref, revision=entry.revision)
    return ref, vendor.plan(asked)


def _repair(job: DownloadJob, entry: ModelEntry, token: JobCancelToken) -> None:
    """Fetch only the damaged or missing files, from the source at the recorded revision."""
    if entry.integrity in (ModelEntry.INTEGRITY_DAMAGED, ModelEntry.INTEGRITY_MISSING) and entry.damaged_files:
        broken = set(entry.damaged_files)
    else:
        damaged, missing = check_entry_files(entry, _entry_plan(entry), JobProgress(job, _entry_plan(entry)), token)
        broken = set(damaged + missing)
    if not broken:
        entry.record_integrity([], [])
        job.finish(DownloadJob.SUCCEEDED, Action.COMPLETE, f"✅ '{entry.name}' is intact; nothing to repair",
                   entry=entry, fields={"entry_id": entry.pk})
        return
    recorded = {f.path: f for f in entry.files.all()}
    broken &= set(recorded)  # a stale list may name files a later update removed
    ref, source = _source_plan(entry, at_recorded_revision=True)
    by_path = {f.path: f for f in source.files}
    wanted = []
    for path in sorted(broken):
        planned, mine = by_path.get(path), recorded[path]
        if planned is None or planned.size != mine.size_bytes or (
            planned.sha256 and mine.sha256 and planned.sha256.lower() != mine.sha256
        ):
            raise DownloadError(
                f"the source no longer has {path} as recorded at revision {entry.revision[:12]}; update the model instead",
                kind="source_changed",
            )
        # The recorded sha256 is what the repaired file must match, whatever the source says.
        wanted.append(dataclasses.replace(planned, sha256=mine.sha256 or planned.sha256))
    plan = dataclasses.replace(source, files=wanted)
    job.plan = plan.to_json()
    job.save(update_fields=["plan", "updated_at"])
    progress = _start(
        job, plan, Action.REPAIR_START,
        f"🩹 Repairing '{entry.name}': fetching {len(wanted)} file(s) ({human_bytes(plan.total_bytes)}) "
        f"at revision {entry.revision.removeprefix('sha256:')[:12]}",
    )
    shutil.rmtree(job.partial_dir, ignore_errors=True)
    job.partial_dir.mkdir(parents=True)
    vendor = vendor_for(ref)
    assert vendor is not None
    vendor.fetch(plan, job.partial_dir, progress, token)
    if token():
        raise Cancelled()
    progress.emit()
    folder = Path(entry.path)
    for planned in wanted:
        target = inside(folder, planned.path)
        target.parent.mkdir(parents=True, exist_ok=True)
        # A new name in place of the broken one: another entry linked to the old bytes keeps them.
        os.replace(inside(job.partial_dir, planned.path), target)
    shutil.rmtree(job.partial_dir, ignore_errors=True)
    damaged, missing = check_entry_files(entry, _entry_plan(entry, broken), JobProgress(job, plan), token)
    entry.record_integrity(damaged, missing)
    if entry.status != ModelEntry.STATUS_READY:
        entry.check_files()
    _finish_check(job, entry, damaged, missing)


# -- updates --------------------------------------------------------------------------


def follows_moving_name(entry: ModelEntry) -> bool:
    """A branch or tag can move; a commit sha cannot, nor can a file or a URL."""
    try:
        ref = parse_reference(entry.reference)
    except UnsupportedReference:
        return False
    if isinstance(ref, HuggingFaceRef):
        revision = ref.revision or ""
        return not (len(revision) == _COMMIT_SHA_LENGTH and all(c in "0123456789abcdef" for c in revision))
    return isinstance(ref, OllamaRef)


def _git_blob_id(path: Path) -> str:
    hasher = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as f:
        while block := f.read(HASH_BLOCK):
            hasher.update(block)
    return hasher.hexdigest()


def _unchanged(entry: ModelEntry, recorded: ModelFile, planned: PlannedFile, plan: Plan) -> bool:
    if recorded.size_bytes != planned.size:
        return False
    if planned.sha256:
        return bool(recorded.sha256) and recorded.sha256 == planned.sha256.lower()
    blob_id = plan.extra.get("git_blob_ids", {}).get(planned.path)
    if not blob_id:
        return False
    try:
        return _git_blob_id(inside(Path(entry.path), planned.path)) == blob_id
    except (OSError, DownloadError):
        return False


def diff(entry: ModelEntry, plan: Plan) -> dict[str, Any]:
    """What moving the entry to ``plan`` changes: files added, removed, changed, unchanged."""
    recorded = {f.path: f for f in entry.files.all()}
    planned = {f.path: f for f in plan.files}
    added = sorted(set(planned) - set(recorded))
    removed = sorted(set(recorded) - set(planned))
    changed: list[str] = []
    unchanged: list[str] = []
    for path in sorted(set(planned) & set(recorded)):
        (unchanged if _unchanged(entry, recorded[path], planned[path], plan) else changed).append(path)
    return {
        "revision": plan.revision,
        "added": added,
        "removed": removed,
        "changed": changed,
        "unchanged": unchanged,
        "bytes_to_fetch": sum(planned[p].size for p in added + changed),
    }


def check_update(entry: ModelEntry) -> ModelEntry:
    """Ask the source where the entry's branch or tag points now, and record what changed.

    Raises DownloadError when the source cannot say; an entry pinned to a commit is
    only marked checked.
    """
    now = timezone.now()
    entry.update_checked_at = now
    if not follows_moving_name(entry):
        entry.save(update_fields=["update_checked_at"])
        return entry
    _ref, plan = _source_plan(entry, at_recorded_revision=False)
    if plan.revision == entry.revision:
        entry.update_revision, entry.update_changes = "", {}
    else:
        changes = diff(entry, plan)
        changes.pop("unchanged")
        entry.update_revision, entry.update_changes = plan.revision, changes
    entry.save(update_fields=["update_revision", "update_changes", "update_checked_at"])
    return entry


def _update(job: DownloadJob, entry: ModelEntry, token: JobCancelToken) -> None:
    """Fetch only what changed into a new folder, verify it, then switch the entry to it
    in one transaction; the old folder serves until then and is removed after."""
    ref = parse_reference(entry.reference)
    vendor = vendor_for(ref)
    assert vendor is not None
    if job.plan:
        plan = Plan.from_json(job.plan)
    else:
        plan = vendor.plan(ref)
        job.plan, job.revision = plan.to_json(), plan.revision
        job.save(update_fields=["plan", "revision", "updated_at"])
    if plan.revision == entry.revision:
        ModelEntry.objects.filter(pk=entry.pk).update(update_revision="", update_changes={})
        job.finish(DownloadJob.SUCCEEDED, Action.EXISTS,
                   f"'{entry.name}' is already at revision {plan.revision.removeprefix('sha256:')[:12]}; nothing to update",
                   entry=entry, fields={"entry_id": entry.pk})
        return
    changes = diff(entry, plan)
    job.narrate(
        Action.PLAN,
        f"Update plan: {len(changes['changed'])} changed, {len(changes['added'])} added, {len(changes['removed'])} "
        f"removed, {len(changes['unchanged'])} unchanged; {human_bytes(changes['bytes_to_fetch'])} to fetch",
        fields={**changes, "bytes_total": plan.total_bytes},
    )
    job.partial_dir.mkdir(parents=True, exist_ok=True)
    # Unchanged files are the old folder's, linked by name: the transfer finds them complete.
    for path in changes["unchanged"]:
        target = inside(job.partial_dir, path)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(inside(Path(entry.path), path), target)
            except OSError as exc:  # gone or on another filesystem: fetched like a changed file
                logger.info("job %s: could not reuse %s: %s", job.pk, path, exc)
    link_known_files(job, plan)
    make_room(job, _missing_bytes(job, plan), keep=(entry.pk,))
    job.bytes_total = plan.total_bytes
    job.save(update_fields=["bytes_total", "updated_at"])
    progress = JobProgress(job, plan)
    fetched = vendor.fetch(plan, job.partial_dir, progress, token)
    if token():
        raise Cancelled()
    progress.emit()
    root = job.hive.path.resolve()
    old_folder, old_revision = Path(entry.path), entry.revision
    final = _install_folder(job, ref, root, replacing=None)
    final.parent.mkdir(parents=True, exist_ok=True)
    (job.partial_dir / INSTALL_MARKER).write_text(json.dumps({"job": job.pk, "reference": job.reference}))
    os.replace(job.partial_dir, final)
    with transaction.atomic():
        entry.replace_files(revision=plan.revision, path=final, models_root=root, files=_records(plan, dict(fetched.sha256)))
        entry.previous_revision, entry.update_revision, entry.update_changes = old_revision, "", {}
        entry.update_checked_at = timezone.now()
        entry.save(update_fields=["previous_revision", "update_revision", "update_changes", "update_checked_at"])
    (final / INSTALL_MARKER).unlink(missing_ok=True)
    old = old_folder.resolve()
    if old != final and old.is_relative_to(root) and len(old.relative_to(root).parts) >= 2:
        shutil.rmtree(old, ignore_errors=True)
    job.finish(
        DownloadJob.SUCCEEDED,
        Action.UPDATE_SWITCHED,
        f"✅ '{entry.name}' updated from {old_revision.removeprefix('sha256:')[:12]} to "
        f"{plan.revision.removeprefix('sha256:')[:12]}: {len(changes['changed']) + len(changes['added'])} file(s) "
        f"fetched, {len(changes['unchanged'])} reused",
        fields={"entry_id": entry.pk, "previous_revision": old_revision, "revision": plan.revision, "path": str(final)},
        entry=entry,
    )


def _missing_bytes(job: DownloadJob, plan: Plan) -> int:
    total = 0
    for planned in plan.files:
        try:
            have = inside(job.partial_dir, planned.path).stat().st_size
        except (OSError, DownloadError):
            have = 0
        total += max(0, planned.size - have)
    return total


# -- periodic checks ------------------------------------------------------------------


def run_periodic_checks(hive: Hive) -> dict[str, list[int]]:
    """What the hive's worker does now and then: ask sources about moving names
    (RBEE_UPDATE_CHECK_S) and queue re-hashes (RBEE_VERIFY_EVERY_S). Returns the ids of
    the entries checked and of the verify jobs queued."""
    now = timezone.now()
    checked, queued = [], []
    if settings.RBEE_UPDATE_CHECK_S:
        due = now - timedelta(seconds=settings.RBEE_UPDATE_CHECK_S)
        for entry in hive.entries.filter(Q(update_checked_at__isnull=True) | Q(update_checked_at__lt=due)):
            if not follows_moving_name(entry):
                continue
            try:
                check_update(entry)
                checked.append(entry.pk)
            except DownloadError as exc:
                # Asked again at the next period, not at every heartbeat.
                ModelEntry.objects.filter(pk=entry.pk).update(update_checked_at=now)
                logger.warning("update check of %s failed: %s", entry.reference, exc)
    if settings.RBEE_VERIFY_EVERY_S:
        due = now - timedelta(seconds=settings.RBEE_VERIFY_EVERY_S)
        for entry in hive.entries.filter(Q(verified_at__isnull=True) | Q(verified_at__lt=due)):
            job, created = DownloadJob.submit(entry.reference, hive, None, kind=DownloadJob.VERIFY, entry=entry)
            if created:
                queued.append(job.pk)
    return {"checked": checked, "verify_jobs": queued}

"""Installing a verified download into the catalog, and repairing a crashed install.

The protocol: the job's partial folder gets a marker naming the job, is moved into
its final folder in one rename, then the entry is written, then the marker goes.
A crash between the rename and the entry leaves the marker, and the hive's start-up
repair finishes the install (files complete) or removes the folder (they are not).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from django.db.models import Q

from catalog.models import FileRecord, Hive, ModelEntry
from provisioner import engines, metadata
from provisioner.models import Action, DownloadJob
from provisioner.references import Reference, parse_reference
from provisioner.vendors.base import DownloadError, Plan, UnsafePath, inside
from provisioner.vendors.transfer import hash_file
from rbee.formatting import human_bytes

logger = logging.getLogger(__name__)

INSTALL_MARKER = ".rbee-install.json"


def install(
    job: DownloadJob,
    plan: Plan,
    ref: Reference,
    digests: dict[str, str],
    *,
    linked: bool,
    replacing: ModelEntry | None = None,
) -> ModelEntry:
    """Move the verified files into place, then write the entry: the entry comes last.

    ``replacing``: the entry of the same reference whose files went missing; its
    folder is its own to clear, and it keeps its id.
    """
    root = job.hive.path.resolve()
    if replacing is not None:
        replacing.delete_files()
    final = _install_folder(job, ref, root, replacing=replacing)
    final.parent.mkdir(parents=True, exist_ok=True)
    marker = job.partial_dir / INSTALL_MARKER
    marker.write_text(json.dumps({"job": job.pk, "reference": job.reference}))
    os.replace(job.partial_dir, final)
    if replacing is not None:
        replacing.replace_files(revision=plan.revision, path=final, models_root=root, files=_records(plan, digests))
        replacing.metadata = _metadata(plan, final)
        replacing.save(update_fields=["metadata"])
        entry = replacing
    else:
        entry = _create_entry(job, plan, final, root, digests, linked=linked)
    (final / INSTALL_MARKER).unlink(missing_ok=True)
    engines.link_entry(entry, plan)
    return entry


def _metadata(plan: Plan, folder: Path) -> dict[str, object]:
    """What the preview read from the source, else the same headers read from the disk."""
    known = plan.extra.get("metadata")
    if known:
        return dict(known)
    return metadata.describe([f.path for f in plan.files], metadata.local_reader(folder))


def _records(plan: Plan, digests: dict[str, str]) -> list[FileRecord]:
    return [FileRecord(f.path, f.size, digests.get(f.path, f.sha256 or ""), f.media_type) for f in plan.files]


def _create_entry(
    job: DownloadJob, plan: Plan, folder: Path, root: Path, digests: dict[str, str], *, linked: bool
) -> ModelEntry:
    return ModelEntry.objects.create_from_plan(
        hive=job.hive,
        reference=job.reference,
        name=parse_reference(job.reference).display_name,
        vendor=plan.vendor,
        revision=plan.revision,
        path=folder,
        models_root=root,
        files=_records(plan, digests),
        linked=linked,
        metadata=_metadata(plan, folder),
    )


def _install_folder(job: DownloadJob, ref: Reference, root: Path, *, replacing: ModelEntry | None = None) -> Path:
    """The folder this job's files move to: strictly inside its vendor's area, and free.

    Only a leftover of this very job (its own install marker) is ever removed. A folder
    that anything else owns, or that is an entry's folder or holds one, is left alone
    and the files go to a fresh sibling folder instead: an install never replaces data
    it did not write.
    """
    area = (root / ref.folder.split("/", 1)[0]).resolve()
    wanted = (root / ref.folder).resolve()
    if wanted == area or not wanted.is_relative_to(area):
        raise UnsafePath(f"refusing to install outside the {area.name} area of the models dir: {wanted}")
    for n in range(1, 100):
        final = wanted if n == 1 else wanted.with_name(f"{wanted.name}.{n}")
        if _marker_job(final) == job.pk:
            shutil.rmtree(final)
        if not final.exists() and not _overlaps_an_entry(job.hive, root, final, but=replacing):
            return final
        logger.warning("job %s: %s is taken; trying the next free folder", job.pk, final)
    raise DownloadError(f"no free folder for {ref.folder} below {root}", kind="conflict")


def _marker_job(folder: Path) -> int | None:
    try:
        job = json.loads((folder / INSTALL_MARKER).read_text()).get("job")
    except (OSError, ValueError, AttributeError):
        return None
    return job if isinstance(job, int) else None


def _overlaps_an_entry(hive: Hive, root: Path, folder: Path, *, but: ModelEntry | None = None) -> bool:
    """Whether an entry on this disk has this folder, or one inside it or around it."""
    neighbours = ModelEntry.objects.filter(Q(hive=hive) | Q(models_root=str(root)))
    if but is not None:
        neighbours = neighbours.exclude(pk=but.pk)
    for path in neighbours.values_list("path", flat=True):
        other = Path(path)
        if other.is_relative_to(folder) or folder.is_relative_to(other):
            return True
    return False


def repair_installs(hive: Hive, *, sole_worker: bool = True) -> None:
    """Finish or undo the installs a crash interrupted on this hive's disk.

    With other workers on the hive, a marker can also be an install happening right
    now: a job whose process still heartbeats is left to that process.
    """
    models_dir = hive.path
    for root, dirs, files in os.walk(models_dir):
        if Path(root) == models_dir and ".partial" in dirs:
            dirs.remove(".partial")
        if INSTALL_MARKER not in files:
            continue
        folder = Path(root)
        marker = folder / INSTALL_MARKER
        dirs.clear()
        job_id = _marker_job(folder)
        job = DownloadJob.objects.select_related("hive").filter(pk=job_id, hive=hive).first() if job_id else None
        live = job is not None and job.state == DownloadJob.RUNNING and not _orphaned(job)
        if live and not sole_worker:
            continue
        entry = ModelEntry.objects.filter(hive=hive, path=str(folder)).first()
        # An update cut before its switch: the entry still serves its old folder, and the
        # job runs again from its plan; this folder is not the entry's.
        update_cut = job is not None and job.kind == DownloadJob.UPDATE and entry is None
        if (
            entry is None
            and not update_cut
            and job is not None
            and job.plan
            and _files_match_plan(folder, Plan.from_json(job.plan))
        ):
            plan = Plan.from_json(job.plan)
            digests = {f.path: hash_file(inside(folder, f.path)).hexdigest() for f in plan.files}
            entry = _create_entry(job, plan, folder, models_dir.resolve(), digests, linked=bool(plan.extra.get("linked")))
            engines.link_entry(entry, plan)
            logger.info("recovered catalog entry for %s at %s", job.reference, folder)
        if entry is None:
            logger.warning("removing %s: installed by a crashed job and not verifiable", folder)
            shutil.rmtree(folder, ignore_errors=True)
            continue
        marker.unlink(missing_ok=True)
        if job is not None and job.is_active:
            job.bytes_total = job.bytes_total or entry.size_bytes
            job.finish(
                DownloadJob.SUCCEEDED,
                Action.COMPLETE,
                f"✅ Model '{entry.name}' was installed before the restart; catalog entry recovered "
                f"({human_bytes(entry.size_bytes)})",
                fields={"entry_id": entry.pk, "recovered": True},
                entry=entry,
            )


def _orphaned(job: DownloadJob) -> bool:
    return DownloadJob.objects.orphaned().filter(pk=job.pk).exists()


def _files_match_plan(folder: Path, plan: Plan) -> bool:
    try:
        return all(inside(folder, f.path).stat().st_size == f.size for f in plan.files)
    except (OSError, DownloadError):
        return False

"""The fleet at a glance: which model is where, across every hive's catalog and queue."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Sum

from catalog.models import Hive, ModelEntry
from provisioner.models import DownloadJob

#: Models shown on the fleet page: the most recently touched first.
ROWS = 200


@dataclass(frozen=True)
class Cell:
    """One model on one hive: ``ready``, ``downloading``, ``queued``, ``failed``, ``missing`` or ``absent``."""

    hive: Hive
    state: str
    entry: ModelEntry | None = None
    job: DownloadJob | None = None

    @property
    def percent(self) -> float | None:
        return self.job.percent if self.job is not None else None


@dataclass(frozen=True)
class Row:
    reference: str
    name: str
    cells: list[Cell]


def matrix(hives: list[Hive]) -> list[Row]:
    """Models × hives: a ready entry wins, else the newest job says what is happening."""
    entries = {(e.hive_id, e.reference): e for e in ModelEntry.objects.select_related("hive")}
    jobs: dict[tuple[int, str], DownloadJob] = {}
    for job in DownloadJob.objects.select_related("hive").order_by("created_at", "pk"):
        jobs[(job.hive_id, job.reference)] = job  # the newest per hive and model
    touched: dict[str, float] = {}
    names: dict[str, str] = {}
    for (_hive, reference), entry in entries.items():
        touched[reference] = max(touched.get(reference, 0.0), entry.updated_at.timestamp())
        names[reference] = entry.name
    for (_hive, reference), job in jobs.items():
        touched[reference] = max(touched.get(reference, 0.0), job.created_at.timestamp())
        names.setdefault(reference, job.display_name)
    rows = []
    for reference in sorted(touched, key=lambda r: -touched[r])[:ROWS]:
        cells = [_cell(hive, entries.get((hive.pk, reference)), jobs.get((hive.pk, reference))) for hive in hives]
        rows.append(Row(reference=reference, name=names[reference], cells=cells))
    return rows


def _cell(hive: Hive, entry: ModelEntry | None, job: DownloadJob | None) -> Cell:
    if entry is not None and entry.status == ModelEntry.STATUS_READY:
        return Cell(hive, "ready", entry=entry, job=job)
    if job is not None and job.state == DownloadJob.RUNNING:
        return Cell(hive, "downloading", entry=entry, job=job)
    if job is not None and job.state == DownloadJob.QUEUED:
        return Cell(hive, "queued", entry=entry, job=job)
    if entry is not None:
        return Cell(hive, "missing", entry=entry, job=job)
    if job is not None and job.state == DownloadJob.FAILED:
        return Cell(hive, "failed", job=job)
    return Cell(hive, "absent", job=job)


def origin_bytes_saved() -> int:
    """Bytes hives took from each other instead of from the origin."""
    return DownloadJob.objects.aggregate(total=Sum("bytes_from_peers"))["total"] or 0

"""The shapes the jobs and hives API reads and answers, for validation and the OpenAPI document."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from ninja import Schema
from pydantic import ConfigDict, StrictInt

from provisioner.models import DownloadJob


def source_bytes(job: DownloadJob) -> tuple[int, int]:
    """(bytes from the origin, bytes from peer hives). Peers' bytes are counted as they
    land; the origin's are recorded once the files are complete, and until then are
    what was done less what peers served."""
    origin = job.bytes_from_origin or max(0, job.bytes_done - job.bytes_from_peers)
    return origin, job.bytes_from_peers


JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class JobOut(Schema):
    id: int
    reference: str
    name: str
    hive: str
    hive_online: bool
    vendor: str
    state: JobState
    kind: Literal["download", "verify", "repair", "update"]
    bytes_done: int
    bytes_total: int | None
    bytes_from_origin: int
    bytes_from_peers: int
    percent: float | None
    speed_bps: float | None
    eta_s: float | None
    queue_position: int | None
    revision: str
    error: str
    error_kind: str
    entry_id: int | None
    last_seq: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    url: str

    @staticmethod
    def resolve_name(job: DownloadJob) -> str:
        return job.display_name

    @staticmethod
    def resolve_hive(job: DownloadJob) -> str:
        return job.hive.name

    @staticmethod
    def resolve_hive_online(job: DownloadJob) -> bool:
        return job.hive.is_online()

    @staticmethod
    def resolve_bytes_from_origin(job: DownloadJob) -> int:
        return source_bytes(job)[0]

    @staticmethod
    def resolve_bytes_from_peers(job: DownloadJob) -> int:
        return source_bytes(job)[1]

    @staticmethod
    def resolve_queue_position(job: DownloadJob) -> int | None:
        return job.queue_position()

    @staticmethod
    def resolve_last_seq(job: DownloadJob) -> int:
        return job.last_seq

    @staticmethod
    def resolve_url(job: DownloadJob) -> str:
        return job.get_absolute_url()


class JobsOut(Schema):
    jobs: list[JobOut]


class EventOut(Schema):
    seq: int
    emitted_at: datetime
    actor: str
    action: str
    target: str
    level: str
    human: str
    fields: dict[str, Any]


class EventsOut(Schema):
    job: int
    state: JobState
    events: list[EventOut]
    last_seq: int
    more: bool


class JobCreateIn(Schema):
    model: str
    hive: str | None = None
    hives: list[str] | None = None


class JobFilter(Schema):
    state: JobState | None = None
    hive: str | None = None


class EntryBriefOut(Schema):
    id: int
    name: str
    reference: str
    size_bytes: int
    pinned: bool
    last_used_at: datetime | None


class HiveOut(Schema):
    name: str
    online: bool
    models_dir: str
    disk_total: int | None
    disk_free: int | None
    catalog_bytes: int
    active_jobs: int
    running_jobs: int
    queued_jobs: int
    paused_jobs: int
    last_heartbeat: datetime | None
    max_bytes_per_s: int | None
    max_concurrent_downloads: int
    download_window: str
    window_open: bool
    high_watermark_percent: int
    low_watermark_percent: int
    # The disk (usage): None where this process cannot see the hive's disk.
    partial_bytes: int | None = None
    dedupe_saved_bytes: int | None = None
    largest: list[EntryBriefOut] = []
    least_recently_used: list[EntryBriefOut] = []


class HiveLimitsIn(Schema):
    """Any of a hive's limits and watermarks; the ones left out stay as they are."""

    model_config = ConfigDict(extra="forbid")

    max_bytes_per_s: StrictInt | None = None
    max_concurrent_downloads: StrictInt | None = None
    download_window: str | None = None
    high_watermark_percent: StrictInt | None = None
    low_watermark_percent: StrictInt | None = None


class HivesOut(Schema):
    hives: list[HiveOut]


class EnsureIn(Schema):
    model: str


class EnsuredFileOut(Schema):
    path: str
    size: int
    sha256: str


class EnsuredEntryOut(Schema):
    id: int
    reference: str
    revision: str
    path: str
    files: list[EnsuredFileOut]


class EnsureReadyOut(Schema):
    state: Literal["ready"]
    entry: EnsuredEntryOut


class EnsureProvisioningOut(Schema):
    state: Literal["provisioning"]
    job: JobOut

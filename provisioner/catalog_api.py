"""JSON API for the catalog: entries, their files, pins and notes, deleting them, and
the disk lifecycle (use, verify, repair, update checks and updates)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from django.http import Http404, HttpRequest, HttpResponse
from ninja import Query, Router, Schema, Status
from pydantic import ConfigDict, StrictBool, field_validator

from catalog.models import ModelEntry
from provisioner.disks import check_update, follows_moving_name
from provisioner.engines import engine_lines
from provisioner.lifecycle import delete_entry
from provisioner.models import DownloadJob
from provisioner.references import UnsupportedReference, parse_reference
from provisioner.schemas import JobOut
from provisioner.vendors.base import DownloadError
from rbee.api import ERRORS, ErrorOut, Refusal

ENTRY_LIST_SIZE = 500

router = Router(tags=["models"])


class FileOut(Schema):
    path: str
    size_bytes: int
    sha256: str
    media_type: str


class EntryOut(Schema):
    id: int
    reference: str
    name: str
    vendor: str
    hive: str
    revision: str
    path: str
    size_bytes: int
    file_count: int
    status: str
    linked: bool
    tags: list[str]
    notes: str
    pinned: bool
    last_used_at: datetime | None
    integrity: str
    damaged_files: list[str]
    verified_at: datetime | None
    bytes_on_disk: int | None
    update_available: bool
    update_revision: str
    update_changes: dict[str, Any]
    update_checked_at: datetime | None
    previous_revision: str
    created_at: datetime
    url: str

    @staticmethod
    def resolve_bytes_on_disk(entry: ModelEntry) -> int | None:
        return entry.bytes_on_disk()

    @staticmethod
    def resolve_hive(entry: ModelEntry) -> str:
        return entry.hive.name

    @staticmethod
    def resolve_tags(entry: ModelEntry) -> list[str]:
        return entry.tag_list

    @staticmethod
    def resolve_url(entry: ModelEntry) -> str:
        return entry.get_absolute_url()


class EngineLineOut(Schema):
    engine: str
    line: str


class EntryDetailOut(EntryOut):
    files: list[FileOut]
    # What the model is (architecture, parameters, context, quant…) and how engines run it offline.
    metadata: dict[str, Any]
    engines: list[EngineLineOut]

    @staticmethod
    def resolve_engines(entry: ModelEntry) -> list[dict[str, str]]:
        return engine_lines(entry)

    @staticmethod
    def resolve_files(entry: ModelEntry) -> list[object]:
        return list(entry.files.all())


class EntriesOut(Schema):
    models: list[EntryOut]


class EntryFilter(Schema):
    q: str = ""
    vendor: str | None = None
    hive: str | None = None
    reference: str | None = None
    integrity: Literal["unknown", "ok", "damaged", "missing"] | None = None
    update_available: bool | None = None


class EntryPatchIn(Schema):
    """What an admin may change about an entry; anything else is refused."""

    model_config = ConfigDict(extra="forbid")

    pinned: StrictBool | None = None
    notes: str | None = None
    tags: list[str] | None = None

    @field_validator("notes")
    @classmethod
    def _notes_fit(cls, value: str | None) -> str | None:
        if value is not None and len(value) > 10_000:
            raise ValueError("at most 10000 characters")
        return value

    @field_validator("tags")
    @classmethod
    def _tags_fit(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        tags = [t.strip() for t in value if t.strip()]
        if any("," in t for t in tags):
            raise ValueError("a tag cannot contain a comma")
        if len(", ".join(tags)) > ModelEntry._meta.get_field("tags").max_length:  # type: ignore[operator]
            raise ValueError("the tags take at most 256 characters together")
        return tags


class UpdateChecksOut(Schema):
    models: list[EntryOut]
    errors: dict[str, str]


def _canonical(text: str) -> str:
    """The catalog key for a reference as typed, so any spelling of it finds the entry."""
    try:
        return parse_reference(text).canonical
    except UnsupportedReference:
        return text


def _delete(entry: ModelEntry, user: object) -> None:
    """What the entry page's delete does; raises OSError or ValueError when the files
    cannot be removed, and then nothing changed."""
    delete_entry(entry, by=user)


def _get_entry_or_404(pk: int) -> ModelEntry:
    entry = ModelEntry.objects.select_related("hive").filter(pk=pk).first()
    if entry is None:
        raise Http404(f"no model entry {pk}")
    return entry


@router.get("/models/", response={200: EntriesOut, **ERRORS}, summary="Catalog entries, newest first")
def list_models(request: HttpRequest, filters: Query[EntryFilter]) -> dict[str, object]:
    """`q` searches names, references, tags and notes; `reference` matches one entry's
    canonical reference exactly (`acme/x` finds `hf:acme/x`)."""
    entries = ModelEntry.objects.select_related("hive").search(filters.q.strip())
    if filters.vendor:
        entries = entries.filter(vendor=filters.vendor)
    if filters.hive:
        entries = entries.filter(hive__name=filters.hive)
    if filters.reference:
        entries = entries.filter(reference=_canonical(filters.reference.strip()))
    if filters.integrity:
        entries = entries.filter(integrity=filters.integrity)
    if filters.update_available is not None:
        available = entries.update_available()
        entries = available if filters.update_available else entries.exclude(pk__in=available.values("pk"))
    return {"models": list(entries[:ENTRY_LIST_SIZE])}


@router.get("/models/{int:pk}/", response={200: EntryDetailOut, **ERRORS}, summary="One entry with its files")
def get_model(request: HttpRequest, pk: int) -> ModelEntry:
    return _get_entry_or_404(pk)


@router.patch("/models/{int:pk}/", response={200: EntryDetailOut, **ERRORS}, summary="Pin an entry, edit its notes and tags")
def patch_model(request: HttpRequest, pk: int, payload: EntryPatchIn) -> ModelEntry:
    """Only the fields given change; bad input is a 400 with per-field errors and changes nothing."""
    entry = _get_entry_or_404(pk)
    changed = []
    if payload.pinned is not None:
        entry.pinned = payload.pinned
        changed.append("pinned")
    if payload.notes is not None:
        entry.notes = payload.notes
        changed.append("notes")
    if payload.tags is not None:
        entry.tags = ", ".join(payload.tags)
        changed.append("tags")
    if changed:
        entry.save(update_fields=[*changed, "updated_at"])
    return entry


@router.delete(
    "/models/{int:pk}/", response={204: None, 409: ErrorOut, **ERRORS}, summary="Delete an entry and its files"
)
def delete_model(request: HttpRequest, pk: int, force: bool = False) -> HttpResponse:
    """409 when the entry is pinned (unless `?force=1`) or its files cannot be removed;
    the entry is kept then."""
    entry = _get_entry_or_404(pk)
    if entry.pinned and not force:
        raise Refusal(409, f"{entry.name} is pinned; unpin it first, or delete with ?force=1")
    try:
        _delete(entry, request.user)
    except (OSError, ValueError) as exc:
        raise Refusal(409, f"could not delete the files of {entry.name}: {exc}") from None
    return HttpResponse(status=204)


@router.post("/models/{int:pk}/used/", response={200: EntryOut, **ERRORS}, summary="rbee is loading this entry")
def mark_model_used(request: HttpRequest, pk: int) -> ModelEntry:
    """Sets `last_used_at`: an entry in use is not evicted for RBEE_EVICT_MIN_IDLE_S."""
    entry = _get_entry_or_404(pk)
    entry.mark_used()
    return entry


def _submit_entry_job(entry: ModelEntry, kind: str, user: object) -> Status[DownloadJob]:
    job, created = DownloadJob.submit(entry.reference, entry.hive, user, kind=kind, entry=entry)
    if not created and job.kind != kind:
        raise Refusal(409, f"job {job.pk} ({job.kind}) is active for {entry.name}; try again once it has finished")
    return Status(202 if created else 200, job)


@router.post(
    "/models/{int:pk}/verify/", response={200: JobOut, 202: JobOut, 409: ErrorOut, **ERRORS},
    summary="Re-hash every file against its recorded sha256",
)
def verify_model(request: HttpRequest, pk: int) -> Status[DownloadJob]:
    """A verify job (202; 200 when one is already active): the entry's `integrity` becomes
    `ok`, `damaged` or `missing`, with `damaged_files` and `verified_at`."""
    return _submit_entry_job(_get_entry_or_404(pk), DownloadJob.VERIFY, request.user)


@router.post(
    "/models/{int:pk}/repair/", response={200: JobOut, 202: JobOut, 409: ErrorOut, **ERRORS},
    summary="Fetch only the damaged or missing files",
)
def repair_model(request: HttpRequest, pk: int) -> Status[DownloadJob]:
    """From the source at the recorded revision, then verified against the recorded sha256."""
    return _submit_entry_job(_get_entry_or_404(pk), DownloadJob.REPAIR, request.user)


@router.post(
    "/models/{int:pk}/update/", response={200: JobOut, 202: JobOut, 409: ErrorOut, **ERRORS},
    summary="Move the entry to its branch's or tag's current revision",
)
def update_model(request: HttpRequest, pk: int) -> Status[DownloadJob]:
    """Fetches only what changed; the old files serve until the new set is verified."""
    entry = _get_entry_or_404(pk)
    if not follows_moving_name(entry):
        raise Refusal(409, f"{entry.reference} names a fixed revision; there is nothing to update to")
    return _submit_entry_job(entry, DownloadJob.UPDATE, request.user)


@router.post(
    "/models/{int:pk}/check-update/", response={200: EntryOut, 409: ErrorOut, 502: ErrorOut, **ERRORS},
    summary="Ask the source whether the entry's branch or tag moved",
)
def check_model_update(request: HttpRequest, pk: int) -> ModelEntry:
    entry = _get_entry_or_404(pk)
    if not follows_moving_name(entry):
        raise Refusal(409, f"{entry.reference} names a fixed revision; there is nothing to check")
    try:
        return check_update(entry)
    except DownloadError as exc:
        raise Refusal(502, f"could not ask the source about {entry.reference}: {exc}") from None


@router.post("/models/check-updates/", response={200: UpdateChecksOut, **ERRORS}, summary="Check every entry for updates")
def check_model_updates(request: HttpRequest) -> dict[str, object]:
    """Every entry that follows a branch or tag; `errors` names the ones the source could not answer for."""
    checked, errors = [], {}
    for entry in ModelEntry.objects.select_related("hive"):
        if not follows_moving_name(entry):
            continue
        try:
            checked.append(check_update(entry))
        except DownloadError as exc:
            errors[str(entry.pk)] = str(exc)
    return {"models": checked, "errors": errors}

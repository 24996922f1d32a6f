"""JSON API for the catalog: entries, their files, and deleting them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.http import Http404, HttpRequest, HttpResponse
from ninja import Query, Router, Schema

from catalog.models import ModelEntry
from provisioner.engines import engine_lines
from provisioner.lifecycle import delete_entry
from provisioner.references import UnsupportedReference, parse_reference
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
    created_at: datetime
    url: str

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
    return {"models": list(entries[:ENTRY_LIST_SIZE])}


@router.get("/models/{int:pk}/", response={200: EntryDetailOut, **ERRORS}, summary="One entry with its files")
def get_model(request: HttpRequest, pk: int) -> ModelEntry:
    return _get_entry_or_404(pk)


@router.delete(
    "/models/{int:pk}/", response={204: None, 409: ErrorOut, **ERRORS}, summary="Delete an entry and its files"
)
def delete_model(request: HttpRequest, pk: int) -> HttpResponse:
    """409 when the files cannot be removed; the entry is kept then."""
    entry = _get_entry_or_404(pk)
    try:
        _delete(entry, request.user)
    except (OSError, ValueError) as exc:
        raise Refusal(409, f"could not delete the files of {entry.name}: {exc}") from None
    return HttpResponse(status=204)

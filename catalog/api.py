"""JSON API for the catalog."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.http import require_GET

from accounts.auth import api_staff_required
from catalog.models import ModelEntry


def entry_json(entry: ModelEntry, *, files: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": entry.pk,
        "reference": entry.reference,
        "name": entry.name,
        "vendor": entry.vendor,
        "hive": entry.hive.name,
        "revision": entry.revision,
        "path": entry.path,
        "size_bytes": entry.size_bytes,
        "file_count": entry.file_count,
        "status": entry.status,
        "linked": entry.linked,
        "tags": entry.tag_list,
        "notes": entry.notes,
        "created_at": entry.created_at.isoformat(),
        "url": entry.get_absolute_url(),
    }
    if files:
        data["files"] = [
            {"path": f.path, "size_bytes": f.size_bytes, "sha256": f.sha256, "media_type": f.media_type}
            for f in entry.files.all()
        ]
    return data


@api_staff_required
@require_GET
def models_index(request: HttpRequest) -> HttpResponse:
    entries = ModelEntry.objects.select_related("hive").search(request.GET.get("q", ""))
    if vendor := request.GET.get("vendor"):
        entries = entries.filter(vendor=vendor)
    if hive := request.GET.get("hive"):
        entries = entries.filter(hive__name=hive)
    return JsonResponse({"models": [entry_json(e) for e in entries[:500]]})


@api_staff_required
@require_GET
def model_detail(request: HttpRequest, pk: int) -> HttpResponse:
    entry = get_object_or_404(ModelEntry.objects.select_related("hive"), pk=pk)
    return JsonResponse(entry_json(entry, files=True))

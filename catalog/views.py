from __future__ import annotations

from django.core.paginator import Paginator
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET

from accounts.auth import staff_required
from catalog.models import Hive, ModelEntry
from rbee.http import HtmxHttpRequest

SORTS = {
    "name": "name",
    "-name": "-name",
    "size": "size_bytes",
    "-size": "-size_bytes",
    "added": "created_at",
    "-added": "-created_at",
    "vendor": "vendor",
    "-vendor": "-vendor",
}
PAGE_SIZE = 25


def disk_summary() -> list[dict[str, object]]:
    """Per hive: catalog size (shared files once), partial downloads, and the disk's free space."""
    rows: list[dict[str, object]] = []
    for hive in Hive.objects.all():
        usage = hive.usage()
        total, free = usage.total, usage.free
        rows.append(
            {
                "hive": hive,
                "used": usage.catalog,
                "partial": usage.partial,
                "total": total,
                "free": free,
                "disk_used": total - free if total is not None and free is not None else None,
                "online": hive.is_online(),
            }
        )
    return rows


@staff_required
@require_GET
def model_list(request: HtmxHttpRequest) -> HttpResponse:
    query = request.GET.get("q", "").strip()
    vendor = request.GET.get("vendor", "")
    hive = request.GET.get("hive", "")
    integrity = request.GET.get("integrity", "")
    updates = request.GET.get("updates", "")
    sort = request.GET.get("sort", "-added")
    entries = ModelEntry.objects.select_related("hive").search(query)
    if vendor:
        entries = entries.filter(vendor=vendor)
    if hive:
        entries = entries.filter(hive__name=hive)
    if integrity:
        entries = entries.filter(integrity=integrity)
    if updates:
        entries = entries.update_available()
    entries = entries.order_by(SORTS.get(sort, "-created_at"), "pk")
    page = Paginator(entries, PAGE_SIZE).get_page(request.GET.get("page"))
    for entry in page:
        entry.check_files()
    context = {
        "page": page,
        "query": query,
        "vendor": vendor,
        "hive": hive,
        "sort": sort,
        "integrity": integrity,
        "integrities": ModelEntry.INTEGRITY_CHOICES,
        "updates": updates,
        "vendors": ModelEntry.objects.order_by("vendor").values_list("vendor", flat=True).distinct(),
        "hives": Hive.objects.all(),
        "any_entries": ModelEntry.objects.exists(),
    }
    if request.htmx and request.htmx.target == "catalog-results":
        return render(request, "catalog/model_list.html#results", context)
    context["disks"] = disk_summary()
    return render(request, "catalog/model_list.html", context)


@staff_required
@require_GET
def model_detail(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    entry = get_object_or_404(ModelEntry.objects.select_related("hive"), pk=pk)
    entry.check_files()  # files removed by hand show as missing now, not at the next restart
    job = entry.jobs.order_by("-created_at").first()
    context = {
        "entry": entry,
        "files": entry.files.all(),
        "job": job,
        "on_disk": entry.bytes_on_disk(),
        # Whether the reference follows a branch or tag is the provisioner's to say.
        "follows_moving_name": entry.vendor == "ollama"
        or (entry.vendor == "huggingface" and not _pinned_to_commit(entry.reference)),
        # The same model on the other hives of the fleet (each hive's own copy and entry).
        "holders": ModelEntry.objects.filter(reference=entry.reference).select_related("hive").order_by("hive__name"),
    }
    return render(request, "catalog/model_detail.html", context)


def _pinned_to_commit(reference: str) -> bool:
    """``hf:org/name@<40 hex>``: a commit that never moves (a branch or tag name would)."""
    revision = reference.partition("@")[2].partition(":")[0]
    return len(revision) == 40 and all(c in "0123456789abcdef" for c in revision)


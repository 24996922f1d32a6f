from __future__ import annotations

from django.core.paginator import Paginator
from django.db.models import Sum
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
    """Per hive: catalog size, partial downloads, and the disk's free space."""
    used = dict(ModelEntry.objects.values_list("hive").annotate(total=Sum("size_bytes")))
    rows = []
    for hive in Hive.objects.all():
        total, free = hive.disk_space()
        rows.append(
            {
                "hive": hive,
                "used": used.get(hive.pk, 0),
                "partial": hive.partial_bytes(),
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
    sort = request.GET.get("sort", "-added")
    entries = ModelEntry.objects.select_related("hive").search(query)
    if vendor:
        entries = entries.filter(vendor=vendor)
    if hive:
        entries = entries.filter(hive__name=hive)
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
    # The same model on the other hives of the fleet (each hive's own copy and entry).
    holders = ModelEntry.objects.filter(reference=entry.reference).select_related("hive").order_by("hive__name")
    context = {"entry": entry, "files": entry.files.all(), "job": job, "holders": holders}
    return render(request, "catalog/model_detail.html", context)

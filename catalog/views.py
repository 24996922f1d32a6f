from __future__ import annotations

from django.contrib import messages
from django.core.paginator import Paginator
from django.db import transaction
from django.db.models import Sum
from django.http import HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET, require_http_methods
from django_htmx.http import HttpResponseClientRedirect

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
    job = entry.jobs.order_by("-created_at").first()
    return render(request, "catalog/model_detail.html", {"entry": entry, "files": entry.files.all(), "job": job})


@staff_required
@require_http_methods(["GET", "POST"])
def model_delete(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """GET asks for confirmation (pages work without JavaScript); POST deletes.

    Files go first, then the entry; the delete is narrated on the job that brought it.
    """
    from provisioner.narration import narrate_catalog

    entry = get_object_or_404(ModelEntry.objects.select_related("hive"), pk=pk)
    if request.method == "GET":
        return render(request, "catalog/model_confirm_delete.html", {"entry": entry})
    try:
        entry.delete_files()
    except (OSError, ValueError) as exc:
        messages.error(request, f"Could not delete the files of {entry.name}: {exc}")
        return HttpResponseRedirect(entry.get_absolute_url(), status=303)
    narrate_catalog(
        entry,
        "model_delete",
        f"🗑 Model '{entry.name}' deleted from hive '{entry.hive.name}' by {request.user}",
    )
    with transaction.atomic():
        entry.delete()
    messages.success(request, f"Deleted {entry.name} from {entry.hive.name}.")
    if request.htmx:
        return HttpResponseClientRedirect("/models/")
    return HttpResponseRedirect("/models/", status=303)

"""JSON API for jobs: what scripts and other rbee parts use instead of the pages."""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.http import require_GET, require_http_methods

from accounts.auth import api_staff_required
from catalog.models import Hive
from provisioner.forms import DownloadForm
from provisioner.models import DownloadJob, NarrationEvent
from provisioner.tasks import submit

EVENTS_PAGE = 500


def job_json(job: DownloadJob) -> dict[str, Any]:
    return {
        "id": job.pk,
        "reference": job.reference,
        "name": job.display_name,
        "hive": job.hive.name,
        "hive_online": job.hive.is_online(),
        "vendor": job.vendor,
        "state": job.state,
        "bytes_done": job.bytes_done,
        "bytes_total": job.bytes_total,
        "percent": job.percent,
        "speed_bps": job.speed_bps,
        "eta_s": job.eta_s,
        "queue_position": job.queue_position(),
        "revision": job.revision,
        "error": job.error,
        "error_kind": job.error_kind,
        "entry_id": job.entry_id,
        "last_seq": job.event_seq,
        "created_at": job.created_at.isoformat(),
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "url": job.get_absolute_url(),
    }


def event_json(event: NarrationEvent) -> dict[str, Any]:
    return {
        "seq": event.seq,
        "emitted_at": event.emitted_at.isoformat(),
        "actor": event.actor,
        "action": event.action,
        "target": event.target,
        "level": event.level,
        "human": event.human,
        "fields": event.fields,
    }


@api_staff_required
@require_http_methods(["GET", "POST"])
def jobs_index(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        return _create(request)
    jobs = DownloadJob.objects.select_related("hive")
    if state := request.GET.get("state"):
        jobs = jobs.filter(state=state)
    if hive := request.GET.get("hive"):
        jobs = jobs.filter(hive__name=hive)
    return JsonResponse({"jobs": [job_json(j) for j in jobs[:200]]})


def _create(request: HttpRequest) -> HttpResponse:
    try:
        body = json.loads(request.body or b"{}")
    except ValueError:
        return JsonResponse({"error": "the body must be JSON"}, status=400)
    if not isinstance(body, dict):
        return JsonResponse({"error": 'expected {"model": "..."}'}, status=400)
    data = {"model": body.get("model", "")}
    if hive_name := body.get("hive"):
        hive = Hive.objects.filter(name=hive_name).first()
        if hive is None:
            return JsonResponse({"error": f"unknown hive {hive_name!r}"}, status=400)
        data["hive"] = str(hive.pk)
    form = DownloadForm(data)
    if not form.is_valid():
        return JsonResponse({"error": "invalid request", "fields": form.errors}, status=400)
    job, created = submit(form.cleaned_data["model"], form.cleaned_data["hive"], request.user)
    return JsonResponse(job_json(job), status=201 if created else 200)


@api_staff_required
@require_GET
def job_detail(request: HttpRequest, pk: int) -> HttpResponse:
    job = get_object_or_404(DownloadJob.objects.select_related("hive"), pk=pk)
    return JsonResponse(job_json(job))


@api_staff_required
@require_GET
def job_events(request: HttpRequest, pk: int) -> HttpResponse:
    job = get_object_or_404(DownloadJob, pk=pk)
    try:
        after = int(request.GET.get("after", "0"))
    except ValueError:
        return JsonResponse({"error": "after must be a whole number"}, status=400)
    events = list(job.events.filter(seq__gt=after).order_by("seq")[:EVENTS_PAGE])
    return JsonResponse(
        {
            "job": job.pk,
            "state": job.state,
            "events": [event_json(e) for e in events],
            "last_seq": events[-1].seq if events else after,
            "more": len(events) == EVENTS_PAGE,
        }
    )

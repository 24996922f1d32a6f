from __future__ import annotations

import time

from django.contrib import messages
from django.db.models import QuerySet
from django.http import HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect

from accounts.auth import staff_required
from catalog.models import Hive
from provisioner.forms import DownloadForm
from provisioner.models import DownloadJob
from provisioner.narration import narrate
from provisioner.tasks import enqueue, submit
from provisioner.vendors import vendor_for
from provisioner.vendors.base import DownloadError, Plan
from rbee.http import HtmxHttpRequest

JOB_LIST_SIZE = 50


def recent_jobs() -> QuerySet[DownloadJob]:
    return DownloadJob.objects.select_related("hive")[:JOB_LIST_SIZE]


def _get_job_or_404(request: HtmxHttpRequest, pk: int) -> DownloadJob:
    return get_object_or_404(DownloadJob.objects.select_related("hive", "entry", "requested_by"), pk=pk)


@staff_required
@require_http_methods(["GET", "POST"])
def jobs(request: HtmxHttpRequest) -> HttpResponse:
    """GET lists jobs; POST (the download form) queues one."""
    if request.method == "POST":
        return _create_job(request)
    return render(request, "provisioner/job_list.html", {"jobs": recent_jobs()})


def _create_job(request: HtmxHttpRequest) -> HttpResponse:
    form = DownloadForm(request.POST)
    if not form.is_valid():
        template = "provisioner/job_new.html#download-form" if request.htmx else "provisioner/job_new.html"
        return render(request, template, {"form": form}, status=400)
    hive = form.cleaned_data["hive"]
    plan = _previewed_plan(request, hive, form.cleaned_data["model"])
    job, created = submit(form.cleaned_data["model"], hive, request.user, plan=plan)
    if not created:
        messages.info(request, "That model is already being downloaded on this hive; here is its job.")
    if request.htmx:
        return HttpResponseClientRedirect(job.get_absolute_url())
    return HttpResponseRedirect(job.get_absolute_url(), status=303)


@staff_required
@require_GET
def job_new(request: HtmxHttpRequest) -> HttpResponse:
    form = DownloadForm(initial={"model": request.GET.get("model", "")})
    return render(request, "provisioner/job_new.html", {"form": form, "hives": Hive.objects.all()})


@staff_required
@require_GET
def job_plan_preview(request: HtmxHttpRequest) -> HttpResponse:
    """What a reference would download, asked of the source as the admin types."""
    text = request.GET.get("model", "").strip()
    context: dict[str, object] = {"text": text}
    if text:
        form = DownloadForm({"model": text, "hive": request.GET.get("hive") or None})
        if form.is_valid() and form.reference is not None:
            vendor = vendor_for(form.reference)
            hive = form.cleaned_data["hive"]
            context.update(reference=form.reference, vendor=vendor, hive=hive)
            try:
                plan = vendor.plan(form.reference)  # type: ignore[union-attr]
            except DownloadError as exc:
                context["error"] = str(exc)
            else:
                context.update(plan=plan, free=hive.usable_bytes())
                _remember_plan(request, hive, plan)
        else:
            context["error"] = "; ".join(str(e) for errors in form.errors.values() for e in errors)
    return render(request, "provisioner/plan_preview.html", context)


PLAN_TTL_S = 15 * 60
PLANS_KEPT = 5


def _remember_plan(request: HtmxHttpRequest, hive: Hive, plan: Plan) -> None:
    """Keep what the preview showed, so Download fetches exactly that."""
    plans = [p for p in request.session.get("previewed_plans", []) if time.time() - p["at"] < PLAN_TTL_S]
    plans = [p for p in plans if (p["hive"], p["plan"]["reference"]) != (hive.pk, plan.reference)]
    plans.append({"hive": hive.pk, "at": time.time(), "plan": plan.to_json()})
    request.session["previewed_plans"] = plans[-PLANS_KEPT:]


def _previewed_plan(request: HtmxHttpRequest, hive: Hive, reference: str) -> Plan | None:
    for item in request.session.get("previewed_plans", []):
        fresh = time.time() - item["at"] < PLAN_TTL_S
        if fresh and item["hive"] == hive.pk and item["plan"]["reference"] == reference:
            return Plan.from_json(item["plan"])
    return None


@staff_required
@require_GET
def job_detail(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    job = _get_job_or_404(request, pk)
    # Read the last seq first and show events up to it: the socket replays the rest.
    last_seq = job.event_seq
    events = job.events.filter(seq__lte=last_seq).exclude(action="model_download_progress").order_by("seq")
    return render(request, "provisioner/job_detail.html", {"job": job, "events": events, "last_seq": last_seq})


@staff_required
@require_POST
def job_cancel(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    job = _get_job_or_404(request, pk)
    was_queued = job.state == DownloadJob.QUEUED
    if job.request_cancel():
        if was_queued and job.state == DownloadJob.CANCELLED:
            narrate(job, "model_download_cancelled", f"⏹ Cancelled by {request.user} before it started", level="warn")
        else:
            narrate(job, "model_download_cancel_requested", f"Cancel requested by {request.user}; stopping…", level="warn")
    return _back_to_job(request, job)


@staff_required
@require_POST
def job_retry(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    job = _get_job_or_404(request, pk)
    if job.reset_for_retry():
        narrate(job, "model_download_queued", f"Retry requested by {request.user}; queued again", fields={"retry": True})
        enqueue(job)
    elif job.is_finished:
        messages.error(request, "Another job for this model is active on this hive; it cannot be retried now.")
    return _back_to_job(request, job)


def _back_to_job(request: HtmxHttpRequest, job: DownloadJob) -> HttpResponse:
    if request.htmx:
        job.refresh_from_db()
        return render(request, "provisioner/job_detail.html#header", {"job": job})
    return HttpResponseRedirect(job.get_absolute_url(), status=303)


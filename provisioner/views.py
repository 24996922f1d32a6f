from __future__ import annotations

import time

from django.conf import settings
from django.contrib import messages
from django.db.models import Count, Q, Sum
from django.http import HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect

from accounts.auth import staff_required
from catalog.models import Hive, ModelEntry
from provisioner import fleet
from provisioner.disks import check_update, follows_moving_name
from provisioner.fit import hive_fit
from provisioner.forms import DownloadForm, HiveLimitsForm
from provisioner.hub_search import clean_page, search_models
from provisioner.lifecycle import delete_entry
from provisioner.models import Action, DownloadJob
from provisioner.vendors import vendor_for
from provisioner.vendors.base import DownloadError, Plan
from provisioner.vendors.huggingface import HuggingFaceVendor
from rbee.http import HtmxHttpRequest


def _get_job_or_404(request: HtmxHttpRequest, pk: int) -> DownloadJob:
    return get_object_or_404(DownloadJob.objects.select_related("hive", "entry", "requested_by"), pk=pk)


@staff_required
@require_http_methods(["GET", "POST"])
def jobs(request: HtmxHttpRequest) -> HttpResponse:
    """GET lists jobs; POST (the download form) queues one."""
    if request.method == "POST":
        return _create_job(request)
    return render(request, "provisioner/job_list.html", {"jobs": DownloadJob.objects.recent()})


def _create_job(request: HtmxHttpRequest) -> HttpResponse:
    form = DownloadForm(request.POST, previewed=lambda hive, reference: _previewed_plan(request, hive, reference))
    if not form.is_valid():
        template = "provisioner/job_new.html#download-form" if request.htmx else "provisioner/job_new.html"
        return render(request, template, {"form": form}, status=400)
    plan = form.plan.to_json() if form.plan is not None else None
    placed = [
        DownloadJob.submit(form.cleaned_data["model"], hive, request.user, plan=plan)
        for hive in form.cleaned_data["targets"]
    ]
    if len(placed) > 1:
        # Several hives: the job list shows them all, live.
        new = sum(created for _job, created in placed)
        messages.success(
            request,
            f"Queued on {new} of {len(placed)} hives"
            + ("; the others were already downloading it." if new < len(placed) else "."),
        )
        url = reverse("jobs")
    else:
        [(job, created)] = placed
        if not created:
            messages.info(request, "That model is already being downloaded on this hive; here is its job.")
        url = job.get_absolute_url()
    if request.htmx:
        return HttpResponseClientRedirect(url)
    return HttpResponseRedirect(url, status=303)


@staff_required
@require_GET
def job_new(request: HtmxHttpRequest) -> HttpResponse:
    form = DownloadForm(initial={"model": request.GET.get("model", "")})
    return render(request, "provisioner/job_new.html", {"form": form, "hives": Hive.objects.all()})


@staff_required
@require_GET
def hub_search(request: HtmxHttpRequest) -> HttpResponse:
    """The Hub's model search; a GET, since it asks only the configured endpoints.

    htmx gets the results fragment; without JavaScript, the download page with them.
    """
    query = request.GET.get("q", "").strip()[:200]
    search = search_models(
        Hive.default().hf_endpoint_list(),
        settings.HF_TOKEN,
        query,
        gguf=bool(request.GET.get("gguf")),
        sort=request.GET.get("sort", ""),
        page=clean_page(request.GET.get("page", "1")),
    )
    if request.htmx:
        return render(request, "provisioner/hub_search.html#results", {"search": search})
    form = DownloadForm(initial={"model": ""})
    return render(request, "provisioner/job_new.html", {"form": form, "search": search})


@staff_required
@require_POST
def job_plan_preview(request: HtmxHttpRequest) -> HttpResponse:
    """What a reference would download, asked of the source as the admin types.

    A CSRF-checked POST: it makes the server contact the reference's host, which
    another site must not be able to make a logged-in admin's browser ask for.
    """
    text = request.POST.get("model", "").strip()
    context: dict[str, object] = {"text": text}
    if text:
        # The preview plans for the first hive chosen; the form checks the fit on each.
        hive_name = request.POST.get("hive") or next(iter(request.POST.getlist("hives")), None)
        form = DownloadForm({"model": text, "hive": hive_name})
        if form.is_valid() and form.reference is not None:
            vendor = vendor_for(form.reference)
            assert vendor is not None  # the form found one
            hive = form.cleaned_data["hive"]
            if isinstance(vendor, HuggingFaceVendor):
                vendor = HuggingFaceVendor(endpoints=hive.hf_endpoint_list())
            context.update(reference=form.reference, vendor=vendor, hive=hive)
            try:
                plan = vendor.plan(form.reference)
            except DownloadError as exc:
                context["error"] = str(exc)
            else:
                plan.extra["metadata"] = vendor.describe(plan)  # headers read by Range, before a byte of weights
                fit = hive_fit(plan.extra, plan.total_bytes, hive, request.POST.get("context"))
                context.update(
                    plan=plan, free=hive.usable_bytes(), eviction=hive.eviction_plan(plan.total_bytes), fit=fit
                )
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
    last_seq = job.last_seq
    events = job.events.filter(seq__lte=last_seq).exclude(action=Action.PROGRESS).order_by("seq")
    return render(request, "provisioner/job_detail.html", {"job": job, "events": events, "last_seq": last_seq})


@staff_required
@require_http_methods(["GET", "POST"])
def job_cancel(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """GET asks for confirmation (in the job page with htmx, a page of its own without); POST cancels."""
    job = _get_job_or_404(request, pk)
    if request.method == "GET":
        if not job.is_active:
            return HttpResponseRedirect(job.get_absolute_url())
        template = "provisioner/job_confirm_cancel.html#confirm" if request.htmx else "provisioner/job_confirm_cancel.html"
        return render(request, template, {"job": job})
    job.cancel(by=request.user)
    return _back_to_job(request, job)


@staff_required
@require_POST
def job_retry(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    job = _get_job_or_404(request, pk)
    if not job.retry(by=request.user) and job.is_finished:
        if job.can_retry:
            messages.error(request, "Another job for this model is active on this hive; it cannot be retried now.")
        else:
            messages.error(request, "This failure would only happen again; change the reference instead.")
    return _back_to_job(request, job)


@staff_required
@require_http_methods(["GET", "POST"])
def model_delete(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """GET asks for confirmation (pages work without JavaScript); POST deletes."""
    entry = get_object_or_404(ModelEntry.objects.select_related("hive"), pk=pk)
    if request.method == "GET":
        return render(request, "catalog/model_confirm_delete.html", {"entry": entry})
    try:
        delete_entry(entry, by=request.user)
    except (OSError, ValueError) as exc:
        messages.error(request, f"Could not delete the files of {entry.name}: {exc}")
        return HttpResponseRedirect(entry.get_absolute_url(), status=303)
    messages.success(request, f"Deleted {entry.name} from {entry.hive.name}.")
    if request.htmx:
        return HttpResponseClientRedirect(reverse("model_list"))
    return HttpResponseRedirect(reverse("model_list"), status=303)


# What each job button does, and when the job's state forbids it.
JOB_ACTIONS = {
    "pause": ("a queued or running job can be paused", DownloadJob.pause),
    "resume": ("a paused job can be resumed", DownloadJob.resume),
    "prioritize": ("a queued or paused job can move up", DownloadJob.prioritize),
}


@staff_required
@require_POST
def job_action(request: HtmxHttpRequest, pk: int, action: str) -> HttpResponse:
    """Pause (keep the bytes, free the slot), resume, or move to the front of the queue."""
    job = _get_job_or_404(request, pk)
    allowed, method = JOB_ACTIONS[action]
    if not method(job, by=request.user):
        messages.error(request, f"Job #{job.pk} is {job.state}; only {allowed}.")
    return _back_to_job(request, job)


def _back_to_job(request: HtmxHttpRequest, job: DownloadJob) -> HttpResponse:
    if request.htmx:
        job.refresh_from_db()
        return render(request, "provisioner/job_detail.html#header", {"job": job})
    if request.POST.get("next") == "list":
        return HttpResponseRedirect(reverse("jobs"), status=303)
    return HttpResponseRedirect(job.get_absolute_url(), status=303)


@staff_required
@require_GET
def hive_list(request: HtmxHttpRequest) -> HttpResponse:
    """The hives, their limits and jobs; then the fleet as models × hives, with "add to"
    in every cell a hive lacks the model."""
    hives = Hive.objects.annotate(
        running=Count("jobs", filter=Q(jobs__state=DownloadJob.RUNNING)),
        queued=Count("jobs", filter=Q(jobs__state=DownloadJob.QUEUED)),
        paused=Count("jobs", filter=Q(jobs__state=DownloadJob.PAUSED)),
        entries_bytes=Sum("entries__size_bytes"),
    )
    # The fleet under the list: models × hives, and what peers saved the origin.
    context = {"hives": hives, "rows": fleet.matrix(list(hives)), "saved": fleet.origin_bytes_saved()}
    return render(request, "provisioner/hive_list.html", context)


@staff_required
@require_http_methods(["GET", "POST"])
def hive_detail(request: HtmxHttpRequest, name: str) -> HttpResponse:
    """The hive's disk, its jobs and its limits; POST changes the limits (as PATCH does)."""
    hive = get_object_or_404(Hive, name=name)
    form = HiveLimitsForm(request.POST or None, instance=hive)
    if request.method == "POST":
        if form.is_valid():
            form.save()
            DownloadJob.dispatch(hive)  # a raised limit or an opened window starts waiting jobs now
            messages.success(request, f"Limits of hive {hive.name} saved; running downloads follow within seconds.")
            return HttpResponseRedirect(reverse("hive_detail", args=[hive.name]), status=303)
    jobs = DownloadJob.objects.filter(hive=hive, state__in=DownloadJob.ACTIVE_STATES).order_by("-priority", "created_at")
    context = {"hive": hive, "form": form, "jobs": jobs, "usage": hive.usage()}
    return render(request, "provisioner/hive_detail.html", context, status=400 if form.errors else 200)


def _back_to_entry(request: HtmxHttpRequest, entry: ModelEntry) -> HttpResponse:
    if request.htmx:
        return HttpResponseClientRedirect(entry.get_absolute_url())
    return HttpResponseRedirect(entry.get_absolute_url(), status=303)


@staff_required
@require_POST
def model_pin(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """Pin (``pinned=1``) or unpin: a pinned entry is never evicted, nor deleted through the API without force."""
    entry = get_object_or_404(ModelEntry.objects.select_related("hive"), pk=pk)
    entry.pinned = request.POST.get("pinned") == "1"
    entry.save(update_fields=["pinned", "updated_at"])
    messages.success(request, f"{entry.name} is {'pinned' if entry.pinned else 'no longer pinned'}.")
    return _back_to_entry(request, entry)


@staff_required
@require_POST
def model_job(request: HtmxHttpRequest, pk: int, kind: str) -> HttpResponse:
    """Verify, repair or update the entry: a job like a download, shown on its job page."""
    entry = get_object_or_404(ModelEntry.objects.select_related("hive"), pk=pk)
    if kind == DownloadJob.UPDATE and not follows_moving_name(entry):
        messages.error(request, f"{entry.reference} names a fixed revision; there is nothing to update to.")
        return _back_to_entry(request, entry)
    job, created = DownloadJob.submit(entry.reference, entry.hive, request.user, kind=kind, entry=entry)
    if not created:
        messages.info(request, f"A {job.kind} of this model is already under way; here is its job.")
    if request.htmx:
        return HttpResponseClientRedirect(job.get_absolute_url())
    return HttpResponseRedirect(job.get_absolute_url(), status=303)


@staff_required
@require_POST
def model_check_update(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    entry = get_object_or_404(ModelEntry.objects.select_related("hive"), pk=pk)
    try:
        check_update(entry)
    except DownloadError as exc:
        messages.error(request, f"Could not ask the source about {entry.reference}: {exc}")
    else:
        messages.info(request, "Update available." if entry.update_available else "Up to date.")
    return _back_to_entry(request, entry)

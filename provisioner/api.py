"""JSON API for jobs and hives: what scripts and other rbee parts use instead of the pages."""

from __future__ import annotations

from typing import Any

from django.db.models import Count, Q, Sum
from django.http import Http404, HttpRequest, StreamingHttpResponse
from ninja import Query, Router, Status

from catalog.models import Hive, ModelEntry
from provisioner.forms import DownloadForm, HiveLimitsForm
from provisioner.models import DownloadJob, NarrationEvent
from provisioner.schemas import (
    EnsureIn,
    EnsureProvisioningOut,
    EnsureReadyOut,
    EventsOut,
    HiveLimitsIn,
    HiveOut,
    HivesOut,
    JobCreateIn,
    JobFilter,
    JobOut,
    JobsOut,
)
from provisioner.stream import narration_stream, resume_point
from rbee.api import ERRORS, ErrorOut, Refusal

EVENTS_PAGE = 500
JOB_LIST_SIZE = 200

router = Router()


def _submit(reference: str, hive: Hive, user: object) -> tuple[DownloadJob, bool]:
    return DownloadJob.submit(reference, hive, user)


def _cancel(job: DownloadJob, user: object) -> bool:
    """Stop a queued or running job; False when it has already finished."""
    return job.cancel(by=user)


def _retry(job: DownloadJob, user: object) -> bool:
    """Queue a failed or cancelled job again; False when its state, its error or
    another active job forbids it."""
    return job.retry(by=user)


def _get_job_or_404(pk: int) -> DownloadJob:
    job = DownloadJob.objects.select_related("hive").filter(pk=pk).first()
    if job is None:
        raise Http404(f"no job {pk}")
    return job


def _hives_named(payload: JobCreateIn) -> tuple[list[Hive], dict[str, list[str]]]:
    """The hives a create names (the default hive when it names none), or the field errors."""
    if payload.hive is not None and payload.hives is not None:
        return [], {"hives": ["give either hive or hives, not both"]}
    field, names = ("hives", payload.hives) if payload.hives is not None else ("hive", [payload.hive or ""])
    names = list(dict.fromkeys(n.strip() for n in names if n and n.strip()))
    if not names:
        if field == "hives":
            return [], {"hives": ["name at least one hive"]}
        return [Hive.default()], {}
    found = {h.name: h for h in Hive.objects.filter(name__in=names)}
    if unknown := [n for n in names if n not in found]:
        return [], {field: [f"unknown hive {n!r}" for n in unknown]}
    return [found[n] for n in names], {}


@router.get("/jobs/", response={200: JobsOut, **ERRORS}, tags=["jobs"], summary="Jobs, newest first")
def list_jobs(request: HttpRequest, filters: Query[JobFilter]) -> dict[str, object]:
    jobs = DownloadJob.objects.select_related("hive")
    if filters.state:
        jobs = jobs.filter(state=filters.state)
    if filters.hive:
        jobs = jobs.filter(hive__name=filters.hive)
    return {"jobs": list(jobs[:JOB_LIST_SIZE])}


@router.post("/jobs/", response={200: JobsOut, 201: JobsOut, **ERRORS}, tags=["jobs"], summary="Download a model")
def create_jobs(request: HttpRequest, payload: JobCreateIn) -> Status[dict[str, object]]:
    """One job per hive (`hive`, or `hives`, or the default hive). A hive that already has
    an active job for the model gets that job back instead of a new one: 201 when at
    least one job is new, 200 when none is. Bad input creates nothing."""
    hives, errors = _hives_named(payload)
    form = DownloadForm({"model": payload.model})
    form.is_valid()
    if "model" in form.errors:
        errors = {"model": [str(e) for e in form.errors["model"]], **errors}
    if errors:
        summary = "; ".join(f"{name}: {' '.join(messages)}" for name, messages in errors.items())
        raise Refusal(400, f"invalid request: {summary}", errors)
    jobs, any_created = [], False
    for hive in hives:
        job, created = _submit(form.cleaned_data["model"], hive, request.user)
        jobs.append(job)
        any_created |= created
    return Status(201 if any_created else 200, {"jobs": jobs})


@router.get("/jobs/{int:pk}/", response={200: JobOut, **ERRORS}, tags=["jobs"], summary="One job")
def get_job(request: HttpRequest, pk: int) -> DownloadJob:
    """State, bytes, speed, ETA and where the bytes came from."""
    return _get_job_or_404(pk)


@router.get("/jobs/{int:pk}/events/", response={200: EventsOut, **ERRORS}, tags=["jobs"], summary="A job's narration")
def list_job_events(request: HttpRequest, pk: int, after: int = 0) -> dict[str, object]:
    """Up to 500 events after seq `after`; `more` says another page follows."""
    job = _get_job_or_404(pk)
    events: list[NarrationEvent] = list(job.events.filter(seq__gt=after).order_by("seq")[:EVENTS_PAGE])
    return {
        "job": job.pk,
        "state": job.state,
        "events": events,
        "last_seq": events[-1].seq if events else after,
        "more": len(events) == EVENTS_PAGE,
    }


@router.post(
    "/jobs/{int:pk}/cancel/", response={200: JobOut, 409: ErrorOut, **ERRORS}, tags=["jobs"], summary="Cancel a job"
)
def cancel_job(request: HttpRequest, pk: int) -> DownloadJob:
    """A queued job is cancelled at once; a running one stops at its next check."""
    job = _get_job_or_404(pk)
    if not _cancel(job, request.user):
        raise Refusal(409, f"job {job.pk} is {job.state}; only a queued or running job can be cancelled")
    return _get_job_or_404(pk)


@router.post(
    "/jobs/{int:pk}/retry/", response={200: JobOut, 409: ErrorOut, **ERRORS}, tags=["jobs"], summary="Retry a job"
)
def retry_job(request: HttpRequest, pk: int) -> DownloadJob:
    """A failed or cancelled job is queued again and resumes from the bytes it kept."""
    job = _get_job_or_404(pk)
    if not _retry(job, request.user):
        if job.is_finished and job.state != DownloadJob.SUCCEEDED:
            reason = f"another job for {job.reference} is active on hive {job.hive.name}; job {job.pk} cannot be retried now"
        else:
            reason = f"job {job.pk} is {job.state}; only a failed or cancelled job can be retried"
        raise Refusal(409, reason)
    return _get_job_or_404(pk)


@router.get(
    "/jobs/{int:pk}/stream/",
    response={200: None, **ERRORS},
    tags=["jobs"],
    summary="A job's narration, live (Server-Sent Events)",
    openapi_extra={
        "parameters": [
            {"name": "Last-Event-ID", "in": "header", "required": False, "schema": {"type": "integer"}},
        ],
        "responses": {
            200: {
                "description": "`text/event-stream`: `id: <seq>`, `event: narration`, `data: <event as in /events/>`",
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            }
        },
    },
)
async def stream_job_events(request: HttpRequest, pk: int, after: int = 0) -> StreamingHttpResponse:
    """Every narration event after `Last-Event-ID` (or `after`), then live ones as they
    happen; the stream ends after the job's final event. A comment every 15 s keeps
    proxies from closing a quiet stream."""
    if not await DownloadJob.objects.filter(pk=pk).aexists():
        raise Http404(f"no job {pk}")
    start = resume_point(request.headers.get("Last-Event-ID"), after)
    if start is None:
        raise Refusal(400, "Last-Event-ID must be a whole number", {"Last-Event-ID": ["must be a whole number"]})
    response = StreamingHttpResponse(narration_stream(pk, start), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


@router.get("/hives/", response={200: HivesOut, **ERRORS}, tags=["hives"], summary="Hives, their disks and queues")
def list_hives(request: HttpRequest) -> dict[str, object]:
    return {"hives": [_hive_json(h, used) for h, used in _hives_with_usage(Hive.objects.all())]}


@router.get("/hives/{name}/", response={200: HiveOut, **ERRORS}, tags=["hives"], summary="One hive")
def get_hive(request: HttpRequest, name: str) -> dict[str, object]:
    rows = _hives_with_usage(Hive.objects.filter(name=name))
    if not rows:
        raise Http404(f"no hive {name!r}")
    return _hive_json(*rows[0])


@router.patch("/hives/{name}/", response={200: HiveOut, **ERRORS}, tags=["hives"], summary="Change a hive's limits and watermarks")
def patch_hive(request: HttpRequest, name: str, payload: HiveLimitsIn) -> dict[str, object]:
    """`max_bytes_per_s` (null: unlimited), `max_concurrent_downloads`, `download_window`
    ("HH:MM-HH:MM", may cross midnight; "": always), `high_watermark_percent`,
    `low_watermark_percent` (past the high mark a download first evicts idle, unpinned
    entries down to the low mark). Only the fields given change; running jobs follow
    within about two seconds; a bad value is a 400 with per-field errors and changes nothing."""
    hive = Hive.objects.filter(name=name).first()
    if hive is None:
        raise Http404(f"no hive {name!r}")
    given = payload.model_fields_set
    if "max_concurrent_downloads" in given and payload.max_concurrent_downloads is None:
        raise Refusal(400, "invalid request", {"max_concurrent_downloads": ["must be a whole number"]})
    if "download_window" in given and payload.download_window is None:
        payload.download_window = ""
    data = {field: getattr(hive, field) for field in HiveLimitsForm.Meta.fields}
    data.update({field: getattr(payload, field) for field in given})
    form = HiveLimitsForm({k: "" if v is None else v for k, v in data.items()}, instance=hive)
    if not form.is_valid():
        errors = {field: [str(e) for e in errs] for field, errs in form.errors.items()}
        raise Refusal(400, "invalid request: " + "; ".join(f"{f}: {' '.join(m)}" for f, m in errors.items()), errors)
    form.save()
    DownloadJob.dispatch(hive)  # a raised limit or an opened window starts waiting jobs now
    return get_hive(request, name)


def _job_action(pk: int, act: str, user: object) -> DownloadJob:
    """Pause, resume or prioritize a job, or refuse with 409 and the reason."""
    job = _get_job_or_404(pk)
    allowed = {
        "pause": ("a queued or running job", job.pause),
        "resume": ("a paused job", job.resume),
        "prioritize": ("a queued or paused job", job.prioritize),
    }
    what, method = allowed[act]
    if not method(by=user):
        raise Refusal(409, f"job {job.pk} is {job.state}; only {what} can be {act}d")
    return _get_job_or_404(pk)


@router.post("/jobs/{int:pk}/pause/", response={200: JobOut, 409: ErrorOut, **ERRORS}, tags=["jobs"], summary="Pause")
def pause_job(request: HttpRequest, pk: int) -> DownloadJob:
    """Keeps the partial bytes and frees the hive's slot; resume goes on from them."""
    return _job_action(pk, "pause", request.user)


@router.post("/jobs/{int:pk}/resume/", response={200: JobOut, 409: ErrorOut, **ERRORS}, tags=["jobs"], summary="Resume")
def resume_job(request: HttpRequest, pk: int) -> DownloadJob:
    """A paused job goes back to its hive's queue."""
    return _job_action(pk, "resume", request.user)


@router.post(
    "/jobs/{int:pk}/prioritize/", response={200: JobOut, 409: ErrorOut, **ERRORS}, tags=["jobs"], summary="Run next"
)
def prioritize_job(request: HttpRequest, pk: int) -> DownloadJob:
    """Moves a queued or paused job to the front of its hive's queue."""
    return _job_action(pk, "prioritize", request.user)
@router.post(
    "/hives/{name}/ensure/",
    response={200: EnsureReadyOut, 202: EnsureProvisioningOut, **ERRORS},
    tags=["hives"],
    summary="Make sure a hive holds a model (what rbee calls before it spawns a worker)",
)
def ensure_model(request: HttpRequest, name: str, payload: EnsureIn) -> Status[dict[str, object]]:
    """200 with the entry's path and files when the hive holds the model (and records the
    use); else 202 with the download job, started (peers first) or already running.
    Calling again is safe: it returns the same job until the entry is there. A model
    the download form would refuse (unsupported, missing, too big for the hive) is a 400."""
    hive = Hive.objects.filter(name=name).first()
    if hive is None:
        raise Http404(f"no hive {name!r}")
    form = DownloadForm({"model": payload.model, "hive": hive.name})
    if not form.is_valid():
        raise Refusal(400, f"invalid request: {_summary(form)}", _errors(form))
    reference = form.cleaned_data["model"]
    entry = ModelEntry.objects.filter(hive=hive, reference=reference, status=ModelEntry.STATUS_READY).first()
    if entry is not None and entry.check_files() == ModelEntry.STATUS_READY:
        entry.mark_used()
        files = [{"path": f.path, "size": f.size_bytes, "sha256": f.sha256} for f in entry.files.all()]
        ready = {"id": entry.pk, "reference": entry.reference, "revision": entry.revision, "path": entry.path}
        return Status(200, {"state": "ready", "entry": {**ready, "files": files}})
    job = DownloadJob.objects.active().filter(hive=hive, reference=reference).select_related("hive").first()
    if job is None:
        # Plans the download, refusing what cannot succeed, as the download form does.
        form = DownloadForm({"model": payload.model, "hive": hive.name}, previewed=lambda h, r: None)
        if not form.is_valid():
            raise Refusal(400, f"cannot provision: {_summary(form)}", _errors(form))
        plan = form.plan.to_json() if form.plan is not None else None
        job, _created = DownloadJob.submit(reference, hive, request.user, plan=plan)
    return Status(202, {"state": "provisioning", "job": job})


def _errors(form: DownloadForm) -> dict[str, list[str]]:
    return {name: [str(e) for e in messages] for name, messages in form.errors.items()}


def _summary(form: DownloadForm) -> str:
    return "; ".join(" ".join(messages) for messages in _errors(form).values())


def _hives_with_usage(hives: Any) -> list[tuple[Hive, int]]:
    counted = hives.annotate(
        active_jobs=Count("jobs", filter=Q(jobs__state__in=DownloadJob.ACTIVE_STATES)),
        running_jobs=Count("jobs", filter=Q(jobs__state=DownloadJob.RUNNING)),
        queued_jobs=Count("jobs", filter=Q(jobs__state=DownloadJob.QUEUED)),
        paused_jobs=Count("jobs", filter=Q(jobs__state=DownloadJob.PAUSED)),
    )
    used = dict(ModelEntry.objects.values_list("hive").annotate(total=Sum("size_bytes")))
    return [(hive, used.get(hive.pk) or 0) for hive in counted]


def _hive_json(hive: Any, catalog_bytes: int) -> dict[str, object]:
    usage = hive.usage()
    total, free = usage.total, usage.free
    return {
        "name": hive.name,
        "online": hive.is_online(),
        "models_dir": str(hive.path),
        "disk_total": total,
        "disk_free": free,
        # Shared (deduplicated) bytes once, where the disk is here to count them.
        "catalog_bytes": catalog_bytes if usage.catalog is None else usage.catalog,
        "high_watermark_percent": hive.high_watermark_percent,
        "low_watermark_percent": hive.low_watermark_percent,
        "partial_bytes": usage.partial,
        "dedupe_saved_bytes": usage.dedupe_saved,
        "largest": usage.largest,
        "least_recently_used": usage.least_recently_used,
        "active_jobs": hive.active_jobs,
        "running_jobs": hive.running_jobs,
        "queued_jobs": hive.queued_jobs,
        "paused_jobs": hive.paused_jobs,
        "last_heartbeat": hive.last_heartbeat,
        "max_bytes_per_s": hive.max_bytes_per_s,
        "max_concurrent_downloads": hive.max_concurrent_downloads,
        "download_window": hive.download_window,
        "window_open": hive.window_open(),
    }

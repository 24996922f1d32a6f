"""narrate(): store a job's event, then push it to every browser that watches.

Storing comes first and allocates the seq, so the stored history and the live
stream share one order: a page replays from the table what it missed and then
drops live messages it has already seen.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction
from django.template.loader import render_to_string

from provisioner.models import DownloadJob, NarrationEvent

logger = logging.getLogger(__name__)

JOBS_GROUP = "jobs"

# The in-memory channel layer keeps asyncio queues that belong to the server's event
# loop; a download thread must hand its messages to that loop, not to a loop of its
# own. The ASGI application records the loop it runs on (see rbee.asgi).
_server_loop: asyncio.AbstractEventLoop | None = None
_server_thread: int | None = None


def remember_server_loop(loop: asyncio.AbstractEventLoop) -> None:
    global _server_loop, _server_thread
    _server_loop, _server_thread = loop, threading.get_ident()


def job_group(job_id: int) -> str:
    return f"job-{job_id}"


def narrate(
    job: DownloadJob,
    action: str,
    human: str,
    *,
    level: str = "info",
    target: str = "",
    fields: dict[str, Any] | None = None,
    actor: str = "provisioner",
) -> NarrationEvent:
    """Record one step of a job and push it live; never raises because a push failed."""
    with transaction.atomic():
        seq = job.next_seq()
        event = NarrationEvent.objects.create(
            job=job,
            seq=seq,
            actor=actor,
            action=action,
            target=target or job.reference,
            level=level,
            human=human,
            fields=fields or {},
        )
    job.event_seq = seq
    # Pushed once committed, so a page never shows what a reader of the table cannot.
    transaction.on_commit(lambda: push_event(job, event))
    return event


def render_event_message(job: DownloadJob, event: NarrationEvent | None) -> str:
    """The HTML a job page's websocket receives: the event line plus the live parts."""
    return render_to_string("provisioner/ws_job_message.html", {"job": job, "event": event, "oob": True})


def render_job_row(job: DownloadJob, *, new: bool = False) -> str:
    return render_to_string("provisioner/ws_job_row.html", {"job": job, "new": new, "oob": True})


def push_event(job: DownloadJob, event: NarrationEvent) -> None:
    try:
        job_message = {"type": "job.event", "seq": event.seq, "html": render_event_message(job, event)}
        row_message = {"type": "job.row", "job_id": job.pk, "html": render_job_row(job)}
        _group_send(job_group(job.pk), job_message)
        _group_send(JOBS_GROUP, row_message)
    except Exception:
        # The event is stored; a page that missed the push replays it by seq.
        logger.exception("could not push event %s of job %s", event.seq, job.pk)


def push_job_created(job: DownloadJob) -> None:
    try:
        _group_send(JOBS_GROUP, {"type": "job.row", "job_id": job.pk, "html": render_job_row(job, new=True)})
    except Exception:
        logger.exception("could not push new job %s", job.pk)


def _group_send(group: str, message: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    loop = _server_loop
    if loop is not None and loop.is_running() and threading.get_ident() != _server_thread:
        future = asyncio.run_coroutine_threadsafe(layer.group_send(group, message), loop)
        future.result(timeout=10)
        return
    async_to_sync(layer.group_send)(group, message)


def narrate_catalog(entry: Any, action: str, human: str, *, fields: dict[str, Any] | None = None) -> NarrationEvent:
    """A catalog change (a delete) told on the job that downloaded the entry.

    An entry no job brought (added in the admin, recovered) gets a job-less event.
    """
    details = {"entry_id": entry.pk, "path": entry.path, "hive": entry.hive.name, **(fields or {})}
    job = DownloadJob.objects.filter(hive=entry.hive, reference=entry.reference).order_by("-created_at").first()
    if job is not None:
        return narrate(job, action, human, target=entry.reference, fields=details)
    event = NarrationEvent.objects.create(
        job=None, seq=0, action=action, target=entry.reference, human=human, fields=details
    )
    logger.info("%s", human)
    return event

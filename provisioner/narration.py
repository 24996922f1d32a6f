"""Pushing narration live: render a job's fragments and send them to its channel groups.

Events are stored by ``DownloadJob.narrate``; this module only delivers them, once
committed, to every browser that watches the job or the job list. A push that fails
loses nothing: the event is stored, and a page that missed it replays it by seq.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import TYPE_CHECKING, Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.template.loader import render_to_string

if TYPE_CHECKING:
    from provisioner.models import DownloadJob, NarrationEvent

logger = logging.getLogger(__name__)

JOBS_GROUP = "jobs"

# The in-memory channel layer keeps asyncio queues that belong to the server's event
# loop; a download thread must hand its messages to that loop, not to a loop of its
# own. The consumers record the loop they run on.
_server_loop: asyncio.AbstractEventLoop | None = None
_server_thread: int | None = None


def remember_server_loop(loop: asyncio.AbstractEventLoop) -> None:
    global _server_loop, _server_thread
    _server_loop, _server_thread = loop, threading.get_ident()


def job_group(job_id: int) -> str:
    return f"job-{job_id}"


def render_event_message(job: DownloadJob | None, event: NarrationEvent | None) -> str:
    """The HTML a job page's websocket receives: the event line plus the live parts."""
    return render_to_string("provisioner/ws_job_message.html", {"job": job, "event": event, "oob": True})


def render_job_row(job: DownloadJob, *, new: bool = False) -> str:
    return render_to_string("provisioner/ws_job_row.html", {"job": job, "new": new, "oob": True})


def push_event(job: DownloadJob, event: NarrationEvent) -> None:
    try:
        job_message = {"type": "job.event", "seq": event.seq, "html": render_event_message(job, event)}
        row_message = {"type": "job.row", "job_id": job.pk, "html": render_job_row(job)}
        group_send(job_group(job.pk), job_message)
        group_send(JOBS_GROUP, row_message)
    except Exception:
        logger.exception("could not push event %s of job %s", event.seq, job.pk)


def push_job_created(job: DownloadJob) -> None:
    try:
        group_send(JOBS_GROUP, {"type": "job.row", "job_id": job.pk, "html": render_job_row(job, new=True)})
    except Exception:
        logger.exception("could not push new job %s", job.pk)


def group_send(group: str, message: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    loop = _server_loop
    if loop is not None and loop.is_running() and threading.get_ident() != _server_thread:
        future = asyncio.run_coroutine_threadsafe(layer.group_send(group, message), loop)
        future.result(timeout=10)
        return
    async_to_sync(layer.group_send)(group, message)

"""A job's narration as Server-Sent Events, served on the ASGI event loop.

The stream joins the job's channel group first and reads the table after, by seq:
an event stored before the join is in the read, one stored after it wakes the
stream, which reads the table again. The pushed message is only a wake-up, so a
missed or dropped push costs a little delay (the keep-alive reads too), never a
gap, and nothing is sent twice because every read starts after the last seq sent.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from asgiref.sync import SyncToAsync
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.db import connections
from ninja.responses import NinjaJSONEncoder

from provisioner.models import Action, DownloadJob, NarrationEvent
from provisioner.narration import job_group, remember_server_loop
from provisioner.schemas import EventOut

# Seconds between keep-alive comments on a quiet stream.
KEEPALIVE_S = 15.0
BATCH = 200
# The event that ends a job's story; a retry starts a new one.
FINAL_ACTIONS = (Action.COMPLETE, Action.EXISTS, Action.FAILED, Action.UNSUPPORTED, Action.CANCELLED)


def resume_point(last_event_id: str | None, after: int) -> int | None:
    """Where a (re)connecting client resumes: the browser's Last-Event-ID wins over ?after=."""
    if last_event_id is None or not last_event_id.strip():
        return max(0, after)
    try:
        return max(0, int(last_event_id.strip()))
    except ValueError:
        return None


def event_frame(event: NarrationEvent) -> str:
    data = json.dumps(EventOut.from_orm(event).model_dump(), cls=NinjaJSONEncoder)
    return f"id: {event.seq}\nevent: narration\ndata: {data}\n\n"


def _read_after(job_id: int, after: int) -> tuple[list[tuple[int, str]], bool, bool]:
    """(events after ``after`` as frames, whether the story has ended with them, finished).

    The job is read before its events: when it is finished, its final event is either
    in this read or (a queued job cancelled from a page) about to be stored and pushed.
    """
    job = DownloadJob.objects.only("state", "finished_at").filter(pk=job_id).first()
    if job is None:
        return [], True, True  # deleted (in the admin): its story is over
    events = list(NarrationEvent.objects.filter(job_id=job_id, seq__gt=after).order_by("seq")[:BATCH])
    last = events[-1].seq if events else after
    finished = job.state in DownloadJob.FINISHED_STATES
    ended = False
    if finished and len(events) < BATCH:
        final = NarrationEvent.objects.filter(job_id=job_id, seq__lte=last, action__in=FINAL_ACTIONS)
        if job.finished_at is not None:
            final = final.filter(emitted_at__gte=job.finished_at)
        ended = final.exists()
    return [(e.seq, event_frame(e)) for e in events], ended, finished


# On the shared pool, not the request's own thread (see _release_request_thread); the
# database connection is closed after each read, so none stays open per client.
_read_after_async = database_sync_to_async(_read_after, thread_sensitive=False)


def _release_request_thread() -> None:
    """Let the thread Django's ASGI handler keeps for this request end now.

    Django runs the sync parts of middleware on one executor thread per request and
    keeps it until the response is over: for a stream that lasts as long as a download,
    one idle thread per client. The stream needs it no more, so that thread closes its
    database connections and exits; the one sync call Django makes after the stream
    (closing the response) gets a fresh, short-lived thread.
    """
    context = SyncToAsync.thread_sensitive_context.get(None)
    # Only a context that made its own executor (Django's); one given an executor owns it.
    if context is None or getattr(context, "_executor", None) is not None:
        return
    executor = SyncToAsync.context_to_thread_executor.pop(context, None)
    if executor is not None:
        executor.submit(connections.close_all)
        executor.shutdown(wait=False)


async def narration_stream(job_id: int, after: int, keepalive_s: float = KEEPALIVE_S) -> AsyncIterator[str]:
    """SSE frames for the job's events after seq ``after``, live, until its final event.

    A client that goes away cancels the iteration (Django's ASGI handler does), and the
    ``finally`` leaves the group and stops the listener.
    """
    # narrate() runs in download threads; with the in-memory layer it must hand its
    # pushes to this loop, as the job page's websocket makes it do.
    remember_server_loop(asyncio.get_running_loop())
    _release_request_thread()
    layer = get_channel_layer()
    wake = asyncio.Event()
    listener: asyncio.Task[None] | None = None
    channel = ""
    if layer is not None:
        channel = await layer.new_channel("sse.")
        await layer.group_add(job_group(job_id), channel)

        async def listen() -> None:
            while True:
                await layer.receive(channel)
                wake.set()

        listener = asyncio.create_task(listen())
    try:
        sent = after
        while True:
            wake.clear()
            frames, ended, finished = await _read_after_async(job_id, sent)
            for seq, frame in frames:
                yield frame
                sent = seq
            if ended:
                return
            if frames:
                continue  # more may be stored than one read takes
            try:
                await asyncio.wait_for(wake.wait(), keepalive_s)
            except TimeoutError:
                if finished:
                    return  # finished, and no final event came in a whole interval: nothing more will
                yield ": keep-alive\n\n"
    finally:
        if listener is not None:
            listener.cancel()
        if layer is not None:
            await layer.group_discard(job_group(job_id), channel)

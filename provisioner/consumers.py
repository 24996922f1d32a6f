"""Websockets that push rendered fragments (hx-swap-oob) to the job pages.

A job page tells the socket the last seq it shows (``{"after": N}``, sent on every
open, so reconnects too); the consumer joins the live group first, replays what
is stored after N, then lets through only live events newer than what it sent.
That ordering is what makes "no gap, no duplicate" hold.
"""

from __future__ import annotations

import json
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.template.loader import render_to_string

from accounts.auth import is_staff
from accounts.consumers import SessionBoundConsumerMixin
from provisioner.models import DownloadJob, NarrationEvent
from provisioner.narration import JOBS_GROUP, job_group, remember_server_loop, render_event_message

REPLAY_BATCH = 200


class JobConsumer(SessionBoundConsumerMixin, AsyncWebsocketConsumer):
    async def connect(self) -> None:
        remember_server_loop_from_scope()
        if not is_staff(self.scope.get("user")):
            await self.close(code=4403)
            return
        self.job_id = int(self.scope["url_route"]["kwargs"]["job_id"])
        if not await database_sync_to_async(DownloadJob.objects.filter(pk=self.job_id).exists)():
            await self.close(code=4404)
            return
        self.sent_seq: int | None = None
        self.pending: list[dict[str, Any]] = []
        await self.channel_layer.group_add(job_group(self.job_id), self.channel_name)
        await self.accept()
        after = _query_int(self.scope, "after")
        if after is not None:
            await self.replay(after)

    async def disconnect(self, code: int) -> None:
        if hasattr(self, "job_id"):
            await self.channel_layer.group_discard(job_group(self.job_id), self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        try:
            message = json.loads(text_data or "{}")
            after = int(message.get("after", 0))
        except (ValueError, TypeError, AttributeError):
            return
        if self.sent_seq is None:
            await self.replay(max(0, after))

    async def replay(self, after: int) -> None:
        """Send stored events after ``after``, then the live ones held back meanwhile."""
        self.sent_seq = after
        while True:
            batch = await self._stored_after(self.sent_seq)
            for html, seq in batch:
                await self.send(text_data=html)
                self.sent_seq = seq
            if len(batch) < REPLAY_BATCH:
                break
        # Current state last, so the page shows the job as it is now.
        await self.send(text_data=await self._current())
        pending, self.pending = self.pending, []
        for message in sorted(pending, key=lambda m: m["seq"]):
            await self.job_event(message)

    @database_sync_to_async
    def _stored_after(self, after: int) -> list[tuple[str, int]]:
        job = DownloadJob.objects.select_related("hive").get(pk=self.job_id)
        events = list(NarrationEvent.objects.filter(job=job, seq__gt=after).order_by("seq")[:REPLAY_BATCH])
        # Progress events are replayed as data only for the last one; the bar shows now.
        return [
            (render_to_string("provisioner/ws_job_message.html", {"event": e, "job": None, "oob": True}), e.seq)
            for e in events
        ]

    @database_sync_to_async
    def _current(self) -> str:
        job = DownloadJob.objects.select_related("hive").get(pk=self.job_id)
        return render_event_message(job, None)

    async def job_event(self, message: dict[str, Any]) -> None:
        if self.sent_seq is None:
            self.pending.append(message)
            return
        if message["seq"] <= self.sent_seq:
            return
        self.sent_seq = message["seq"]
        await self.send(text_data=message["html"])


class JobListConsumer(SessionBoundConsumerMixin, AsyncWebsocketConsumer):
    """Pushes job rows as they change; a (re)connect asks for the rows afresh."""

    async def connect(self) -> None:
        remember_server_loop_from_scope()
        if not is_staff(self.scope.get("user")):
            await self.close(code=4403)
            return
        await self.channel_layer.group_add(JOBS_GROUP, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(JOBS_GROUP, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        try:
            message = json.loads(text_data or "{}")
        except ValueError:
            return
        if isinstance(message, dict) and message.get("resync"):
            await self.send(text_data=await self._rows())

    @database_sync_to_async
    def _rows(self) -> str:
        from provisioner.views import recent_jobs

        return render_to_string("provisioner/ws_job_rows.html", {"jobs": recent_jobs(), "oob": True})

    async def job_row(self, message: dict[str, Any]) -> None:
        await self.send(text_data=message["html"])


def remember_server_loop_from_scope() -> None:
    import asyncio

    remember_server_loop(asyncio.get_running_loop())


def _query_int(scope: dict[str, Any], name: str) -> int | None:
    from urllib.parse import parse_qs

    values = parse_qs(scope.get("query_string", b"").decode()).get(name)
    try:
        return int(values[0]) if values else None
    except ValueError:
        return None

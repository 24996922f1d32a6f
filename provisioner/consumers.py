"""Websockets that push rendered fragments (hx-swap-oob) to the job pages.

A socket states the last seq its page shows as ``?after=N`` in its URL (a page
rewrites it before every reconnect); a socket that states none gets everything
stored, as ``after=0``. The consumer joins the live group first, replays what is
stored after N, then lets through only live events newer than what it sent: that
ordering is what makes "no gap, no duplicate" hold.

Memory stays bounded: live events that arrive during a replay are held up to
``HELD_BACK`` and beyond that dropped and read from the table instead; the channel
layer caps what waits for a slow consumer; and daphne's ping timeout closes a
client that stops reading.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.template.loader import render_to_string

from accounts.auth import is_staff
from accounts.consumers import SessionBoundConsumerMixin
from provisioner.models import DownloadJob, NarrationEvent
from provisioner.narration import JOBS_GROUP, job_group, remember_server_loop, render_event_message

REPLAY_BATCH = 200
HELD_BACK = 500


class JobConsumer(SessionBoundConsumerMixin, AsyncWebsocketConsumer):
    held_back = HELD_BACK
    async def connect(self) -> None:
        remember_server_loop(asyncio.get_running_loop())
        if not is_staff(self.scope.get("user")):
            await self.close(code=4403)
            return
        self.job_id = int(self.scope["url_route"]["kwargs"]["job_id"])
        if not await database_sync_to_async(DownloadJob.objects.filter(pk=self.job_id).exists)():
            await self.close(code=4404)
            return
        self.sent_seq: int | None = None
        self.held: list[dict[str, Any]] = []
        self.overflowed = False
        await self.channel_layer.group_add(job_group(self.job_id), self.channel_name)
        await self.accept()
        await self.replay(max(0, _query_int(self.scope, "after") or 0))

    async def disconnect(self, code: int) -> None:
        if hasattr(self, "job_id"):
            await self.channel_layer.group_discard(job_group(self.job_id), self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Nothing to ask: the socket replayed on connect and streams from there."""

    async def replay(self, after: int) -> None:
        """Send stored events after ``after``, then the live ones held back meanwhile."""
        self.sent_seq = None
        cursor = after
        while True:
            batch = await self._stored_after(cursor)
            for html, seq in batch:
                await self.send(text_data=html)
                cursor = seq
            if len(batch) < REPLAY_BATCH:
                # Live events that overflowed the hold are in the table: read on.
                if not self.overflowed:
                    break
                self.overflowed, self.held = False, []
        self.sent_seq = cursor
        # Current state last, so the page shows the job as it is now.
        await self.send(text_data=await self._current())
        held, self.held = self.held, []
        for message in sorted(held, key=lambda m: m["seq"]):
            await self.job_event(message)

    @database_sync_to_async
    def _stored_after(self, after: int) -> list[tuple[str, int]]:
        events = list(NarrationEvent.objects.filter(job=self.job_id, seq__gt=after).order_by("seq")[:REPLAY_BATCH])
        return [(render_event_message(None, e), e.seq) for e in events]

    @database_sync_to_async
    def _current(self) -> str:
        job = DownloadJob.objects.select_related("hive").get(pk=self.job_id)
        return render_event_message(job, None)

    async def job_event(self, message: dict[str, Any]) -> None:
        if self.sent_seq is None:
            if len(self.held) < self.held_back:
                self.held.append(message)
            else:
                self.overflowed = True
            return
        if message["seq"] <= self.sent_seq:
            return
        self.sent_seq = message["seq"]
        await self.send(text_data=message["html"])


class JobListConsumer(SessionBoundConsumerMixin, AsyncWebsocketConsumer):
    """Pushes job rows as they change; a (re)connect asks for the rows afresh."""

    async def connect(self) -> None:
        remember_server_loop(asyncio.get_running_loop())
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
        return render_to_string("provisioner/ws_job_rows.html", {"jobs": DownloadJob.objects.recent(), "oob": True})

    async def job_row(self, message: dict[str, Any]) -> None:
        await self.send(text_data=message["html"])


def _query_int(scope: dict[str, Any], name: str) -> int | None:
    values = parse_qs(scope.get("query_string", b"").decode()).get(name)
    try:
        return int(values[0]) if values else None
    except ValueError:
        return None

"""Readiness: can this process do its job right now? For load balancers and orchestrators."""

from __future__ import annotations

import asyncio
import uuid

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from catalog.models import Hive

CHANNEL_LAYER_TIMEOUT_S = 2.0


def _database() -> str | None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as error:
        return f"database unreachable: {type(error).__name__}"
    return None


async def _channel_layer() -> str | None:
    """A message sent to a fresh channel and received back: the path every push takes."""
    layer = get_channel_layer()
    if layer is None:
        return "no channel layer configured"
    try:
        channel = await layer.new_channel()
        token = uuid.uuid4().hex
        await layer.send(channel, {"type": "readiness.ping", "token": token})
        message = await asyncio.wait_for(layer.receive(channel), CHANNEL_LAYER_TIMEOUT_S)
    except Exception as error:
        return f"channel layer unreachable: {type(error).__name__}"
    return None if message.get("token") == token else "channel layer returned a stranger's message"


def _workers() -> str | None:
    """Embedded: this process's download pool is up. Scaled: some hive worker heartbeats."""
    if settings.RBEE_SCALED:
        try:
            if any(hive.is_online() for hive in Hive.objects.all()):
                return None
        except Exception as error:
            return f"hives unreadable: {type(error).__name__}"
        return "no hive worker has sent a heartbeat lately"
    from django.tasks import task_backends

    executor = getattr(getattr(task_backends["default"], "_state", None), "executor", None)
    if executor is None or getattr(executor, "_shutdown", False):
        return "the embedded download pool is not running"
    return None


@never_cache
@require_GET
async def readyz(request: HttpRequest) -> JsonResponse:
    """200 when the database, the channel layer and a worker are there; else 503 naming
    what is not. Unauthenticated (it says nothing but ok or what is down) and cheap."""
    checks = {
        "database": await sync_to_async(_database)(),
        "channel_layer": await _channel_layer(),
        "workers": await sync_to_async(_workers)(),
    }
    failed = {name: problem for name, problem in checks.items() if problem}
    if failed:
        return JsonResponse({"status": "unavailable", "failed": failed}, status=503)
    return JsonResponse({"status": "ok", "checks": sorted(checks)})

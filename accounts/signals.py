"""What happens around logins: lockouts are logged, a logout closes its sockets."""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import async_to_sync
from axes.signals import user_locked_out
from channels.layers import get_channel_layer
from django.contrib.auth.signals import user_logged_out
from django.dispatch import receiver
from django.http import HttpRequest

from accounts.consumers import session_group

log = logging.getLogger("accounts")


@receiver(user_locked_out)
def log_lockout(sender: Any, request: HttpRequest | None = None, username: str | None = None,
                ip_address: str | None = None, **kwargs: Any) -> None:
    # Named plainly (django-axes masks both in its own lines): this is the line to alert on.
    log.warning("Login locked out: user %r from address %s", username or "", ip_address or "unknown")


@receiver(user_logged_out)
def close_session_sockets(sender: Any, request: HttpRequest | None = None, **kwargs: Any) -> None:
    session = getattr(request, "session", None)
    key = getattr(session, "session_key", None)
    layer = get_channel_layer()
    if key and layer is not None:
        async_to_sync(layer.group_send)(session_group(key), {"type": "session.ended"})

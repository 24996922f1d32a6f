"""What happens around logins: lockouts are logged."""

from __future__ import annotations

import logging
from typing import Any

from axes.signals import user_locked_out
from django.dispatch import receiver
from django.http import HttpRequest

log = logging.getLogger("accounts")


@receiver(user_locked_out)
def log_lockout(sender: Any, request: HttpRequest | None = None, username: str | None = None,
                ip_address: str | None = None, **kwargs: Any) -> None:
    # Named plainly (django-axes masks both in its own lines): this is the line to alert on.
    log.warning("Login locked out: user %r from address %s", username or "", ip_address or "unknown")

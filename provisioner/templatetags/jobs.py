"""Template tags of the job pages."""

from __future__ import annotations

import dataclasses
from typing import Any

from django import template

from provisioner.routing import socket_path

register = template.Library()


@register.simple_tag
def socket_url(name: str, *args: Any) -> str:
    """``{% socket_url "job" job.pk %}``: a websocket route's path, as ``{% url %}`` gives an HTTP one."""
    return socket_path(name, *args)


@register.filter
def with_selector(reference: Any, selector: str) -> str:
    """The reference with another selector, as an admin would type it (``org/repo:Q4_K_M``)."""
    return dataclasses.replace(reference, selector=selector).canonical.removeprefix("hf:")


@register.filter
def event_icon(event: Any) -> str:
    """Which icon a narration event gets (templates/provisioner/event_icon.html), by level and action."""
    action, level = event.action, event.level
    if level == "error" or action.endswith(("_failed", "_unsupported")):
        return "error"
    if action == "model_delete":
        return "delete"
    if action.endswith(("_cancelled", "_cancel_requested")):
        return "stop"
    if level == "warn" or action.endswith("_exists"):
        return "warn"
    if action.endswith(("_complete", "_file_done", "_recovered")):
        return "done"
    if action.endswith(("_start", "_resumed")):
        return "download"
    return "info"

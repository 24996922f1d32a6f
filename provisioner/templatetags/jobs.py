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

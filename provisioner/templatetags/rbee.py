"""Human units for an admin's glance: GiB, MB/s, "3 min left", relative times."""

from __future__ import annotations

from datetime import datetime

from django import template
from django.contrib.humanize.templatetags.humanize import naturaltime
from django.utils import timezone
from django.utils.html import format_html

register = template.Library()

_UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]


@register.filter
def human_bytes(value: float | int | None) -> str:
    if value is None:
        return "—"
    size = float(value)
    for unit in _UNITS:
        if abs(size) < 1024 or unit == _UNITS[-1]:
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} PiB"  # pragma: no cover


@register.filter
def human_duration(seconds: float | int | None) -> str:
    if seconds is None:
        return "—"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


@register.filter
def reltime(value: datetime | None) -> str:
    """A relative time, with the exact one on hover."""
    if value is None:
        return "—"
    exact = timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S %Z")
    return format_html('<time datetime="{}" title="{}">{}</time>', value.isoformat(), exact, naturaltime(value))


@register.filter
def short_sha(value: str | None) -> str:
    return (value or "").removeprefix("sha256:")[:12]

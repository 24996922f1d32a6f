"""The ``rbee`` template library: human units (from rbee.formatting) and relative times."""

from __future__ import annotations

from datetime import datetime

from django import template
from django.contrib.humanize.templatetags.humanize import naturaltime
from django.utils import timezone
from django.utils.html import format_html

from rbee import formatting

register = template.Library()

register.filter("human_bytes", formatting.human_bytes)
register.filter("human_duration", formatting.human_duration)
register.filter("short_sha", formatting.short_sha)
register.filter("without_emoji", formatting.without_emoji)


@register.filter
def reltime(value: datetime | None) -> str:
    """A relative time, with the exact one on hover."""
    if value is None:
        return "—"
    exact = timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S %Z")
    # rbee.js keeps the text true while the page stays open (class "rel").
    return format_html(
        '<time class="rel" datetime="{}" title="{}">{}</time>', value.isoformat(), exact, naturaltime(value)
    )


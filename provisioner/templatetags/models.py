"""Template tags for what a model is and where engines find it (entry page, plan preview)."""

from __future__ import annotations

from typing import Any

from django import template

from provisioner import engines

register = template.Library()


@register.simple_tag
def engine_lines(entry: Any) -> list[dict[str, str]]:
    """``{% engine_lines entry as lines %}``: the command lines that run the entry offline."""
    return engines.engine_lines(entry)


@register.filter
def human_count(value: Any) -> str:
    """1234567890 as ``1.23B``: parameter counts as model cards write them."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "—"
    for limit, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if number >= limit:
            return f"{number / limit:.3g}{suffix}"
    return f"{number:.0f}"


#: A fit verdict's badge colour (static/rbee/rbee.css).
_VERDICT_BADGES = {"fits": "ok", "tight": "off", "does not fit": "failed"}


@register.filter
def verdict_badge(verdict: str) -> str:
    return _VERDICT_BADGES.get(verdict, "queued")


@register.filter
def mul_mib(mib: Any) -> int:
    """MiB (as nvidia-smi reports memory) in bytes, for human_bytes."""
    try:
        return int(mib) * 1024 * 1024
    except (TypeError, ValueError):
        return 0

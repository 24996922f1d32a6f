"""Human units for an admin's glance: GiB, MB/s, "3 min left". Plain functions, used
by narration text and, through the ``rbee`` template library, by every page."""

from __future__ import annotations

import re

_UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]


def human_bytes(value: float | int | None) -> str:
    if value is None:
        return "—"
    size = float(value)
    for unit in _UNITS:
        if abs(size) < 1024 or unit == _UNITS[-1]:
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} PiB"  # pragma: no cover


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


def short_sha(value: str | None) -> str:
    return (value or "").removeprefix("sha256:")[:12]


# Emoji the narration starts with (✅ ❌ ⚠️ 📥 🗑 ⏹ ✓ …): symbols, dingbats, pictographs,
# and the joiners and variation selectors that go with them.
_LEADING_EMOJI = re.compile(r"^[\u2300-\u23ff\u2600-\u27bf\u2b00-\u2bff\U0001f000-\U0001faff\ufe0f\u200d]+\s*")


def without_emoji(text: str) -> str:
    """Narration text without its leading emoji, which a browser without an emoji
    font draws as empty boxes; the stored text keeps it, for rbee's logs and the API."""
    return _LEADING_EMOJI.sub("", text)

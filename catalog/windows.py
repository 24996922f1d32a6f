"""Download windows: ``"HH:MM-HH:MM"`` in the server's time zone, parsed once.

A window may cross midnight (``22:00-06:00``). Like model references, the text is
parsed into a typed value with a canonical form; a bad value is refused with the
form that works.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time

_WINDOW = re.compile(r"^\s*([01]?\d|2[0-3]):([0-5]\d)\s*[-–]\s*([01]?\d|2[0-3]):([0-5]\d)\s*$")


class InvalidWindow(ValueError):
    def __init__(self, text: str) -> None:
        super().__init__(f"{text!r} is not a download window; use HH:MM-HH:MM, e.g. 22:00-06:00")


@dataclass(frozen=True)
class DownloadWindow:
    start: time
    end: time

    @classmethod
    def parse(cls, text: str) -> DownloadWindow:
        match = _WINDOW.match(text)
        if not match:
            raise InvalidWindow(text)
        start = time(int(match[1]), int(match[2]))
        end = time(int(match[3]), int(match[4]))
        if start == end:
            raise InvalidWindow(text)  # empty or always: say "always" by leaving it empty
        return cls(start, end)

    @property
    def canonical(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"

    @property
    def label(self) -> str:
        return f"{self.start:%H:%M}–{self.end:%H:%M}"

    def contains(self, moment: datetime | time) -> bool:
        """Whether downloads may run at ``moment`` (a local time); the end is exclusive."""
        now = moment.time() if isinstance(moment, datetime) else moment
        if self.start < self.end:
            return self.start <= now < self.end
        return now >= self.start or now < self.end  # crosses midnight

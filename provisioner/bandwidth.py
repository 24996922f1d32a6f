"""A hive's bandwidth cap, shared by all of its downloads, parts and processes.

One token bucket per hive, kept in a small file on the hive's own disk and updated
under ``flock``: every thread and every worker process of the hive draws from it,
whichever process runs the download. The cap is read from the Hive row at most once
a second, so a new cap takes effect on running jobs within that second.
"""

from __future__ import annotations

import fcntl
import os
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path

from catalog.models import Hive

STATE_FILE = ".rbee-bandwidth"
REFRESH_S = 1.0
# How far the bucket may fill while nobody downloads: a short burst, not a second's worth.
BURST_S = 0.1
_STATE = struct.Struct("<dd")  # last refill (monotonic is per process: wall clock), tokens


class HiveBandwidth:
    def __init__(self, hive: Hive) -> None:
        self.hive_id = hive.pk
        self.path = hive.path / STATE_FILE
        self._rate = hive.max_bytes_per_s
        self._read_at = time.monotonic()
        self._lock = threading.Lock()

    @property
    def rate(self) -> int | None:
        with self._lock:
            if time.monotonic() - self._read_at >= REFRESH_S:
                self._rate = Hive.objects.filter(pk=self.hive_id).values_list("max_bytes_per_s", flat=True).first()
                self._read_at = time.monotonic()
            return self._rate

    def consume(self, nbytes: int, wait: Callable[[float], bool] | None = None) -> None:
        """Take ``nbytes`` from the bucket, sleeping as long as the cap asks.

        ``wait(seconds)`` sleeps and returns True to stop early (a cancel): a low cap
        never holds a cancel up.
        """
        rate = self.rate
        if not rate or nbytes <= 0:
            return
        debt = self._draw(nbytes, rate)
        if debt > 0:
            if wait is None:
                time.sleep(debt / rate)
            else:
                wait(debt / rate)

    def _draw(self, nbytes: int, rate: int) -> float:
        """Refill, take, and return how many bytes we are in debt (0 when none)."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            raw = os.pread(fd, _STATE.size, 0)
            now = time.time()
            last, tokens = _STATE.unpack(raw) if len(raw) == _STATE.size else (now, 0.0)
            tokens = min(rate * BURST_S, tokens + max(0.0, now - last) * rate) - nbytes
            os.pwrite(fd, _STATE.pack(now, tokens), 0)
            return max(0.0, -tokens)
        finally:
            os.close(fd)


_limiters: dict[int, HiveBandwidth] = {}
_limiters_lock = threading.Lock()


def for_hive(hive: Hive) -> HiveBandwidth:
    """The limiter of a hive this process sees the disk of, made once per process."""
    with _limiters_lock:
        limiter = _limiters.get(hive.pk)
        if limiter is None or limiter.path != Path(hive.path) / STATE_FILE:
            limiter = _limiters[hive.pk] = HiveBandwidth(hive)
        return limiter

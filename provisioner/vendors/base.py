"""The vendor interface, and the errors and plan every vendor shares.

A vendor knows one kind of source. ``validate`` refuses a reference it could
never fetch, cheaply, while the admin is still on the form; ``plan`` asks the
source what it would download (so the job knows the total before a byte is
written); ``fetch`` writes every planned file into ``dest``, resumably, verified,
and says what it did in a FetchResult. Vendors know nothing of the database.
"""

from __future__ import annotations

import logging
import posixpath
import threading
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from provisioner.references import Reference

logger = logging.getLogger(__name__)


class DownloadError(Exception):
    """A failure the admin can act on. ``kind`` names it for narration and the API."""

    kind = "error"
    retryable = False

    def __init__(self, message: str, *, kind: str | None = None, retryable: bool | None = None) -> None:
        super().__init__(message)
        if kind:
            self.kind = kind
        if retryable is not None:
            self.retryable = retryable


class NotFound(DownloadError):
    kind = "not_found"


class AccessDenied(DownloadError):
    kind = "access_denied"


class NetworkError(DownloadError):
    kind = "network"
    retryable = True


class VerificationError(DownloadError):
    kind = "verification"


class UnsafePath(DownloadError):
    kind = "unsafe_path"


class DiskFull(DownloadError):
    kind = "disk_full"


class Cancelled(Exception):
    """The admin cancelled the job; not a failure."""


def safe_relative_path(name: str) -> str:
    """A remote file name as a path that cannot leave the destination, or UnsafePath.

    Refused outright rather than cleaned up: a source that lists ``../x`` is not one
    to take files from quietly.
    """
    if (
        not name
        or "\\" in name
        or "\x00" in name
        or name.startswith("/")
        or (len(name) > 1 and name[1] == ":")
        or any(part in ("", ".", "..") for part in name.split("/"))
        or posixpath.normpath(name) != name
    ):
        raise UnsafePath(f"refusing remote file name {name!r}: it would escape the model's folder")
    return name


def inside(root: Path, relative: str) -> Path:
    """Join and check that the result (links resolved) stays below root."""
    target = (root / safe_relative_path(relative)).resolve()
    if not target.is_relative_to(root.resolve()):
        raise UnsafePath(f"refusing {relative!r}: it resolves outside {root}")
    return target


@dataclass(frozen=True)
class PlannedFile:
    path: str
    size: int
    sha256: str | None = None
    url: str = ""
    media_type: str = ""


@dataclass
class Plan:
    vendor: str
    reference: str
    revision: str
    files: list[PlannedFile]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Plan:
        files = [PlannedFile(**f) for f in data["files"]]
        return cls(
            vendor=data["vendor"],
            reference=data["reference"],
            revision=data["revision"],
            files=files,
            extra=data.get("extra", {}),
        )


class Progress(Protocol):
    """What fetch reports to while it works; the job narrates from it."""

    def advance(self, path: str, file_bytes: int) -> None: ...

    def file_done(self, path: str, size: int, sha256: str) -> None: ...

    def retry(self, path: str, reason: str, attempt: int, delay_s: float) -> None: ...

    def resumed(self, path: str, offset: int) -> None: ...

    def restarted(self, path: str, reason: str) -> None: ...


class StopSignal:
    """A stop flag for download threads: once set it stays set, and the callbacks that
    cut blocked sockets run once, right away. The job's cancel token and a file's own
    stop (for its parts) are both one."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []

    def __call__(self) -> bool:
        return self._event.is_set()

    def wait(self, seconds: float) -> bool:
        return self._event.wait(seconds)

    def set(self) -> None:
        self._raise(None)

    def _raise(self, why: str | None) -> None:
        """Raise the flag once; the first caller's ``why`` is the one kept (``_record``)."""
        with self._lock:
            if self._event.is_set():
                return
            self._record(why)
            self._event.set()
            callbacks = list(self._callbacks)
        for callback in callbacks:
            try:
                callback()
            except Exception:
                logger.exception("stop callback failed")

    def _record(self, why: str | None) -> None:
        """Under the lock, just before the flag goes up: a subclass keeps why."""

    def on_cancel(self, callback: Callable[[], None]) -> Callable[[], None]:
        with self._lock:
            self._callbacks.append(callback)
            already = self._event.is_set()
        if already:
            callback()

        def unhook() -> None:
            with self._lock:
                if callback in self._callbacks:
                    self._callbacks.remove(callback)

        return unhook


class CancelToken(Protocol):
    """Asked by fetch whether the admin cancelled; also how it waits and unblocks."""

    def __call__(self) -> bool:
        """True once the job is cancelled."""
        ...

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds`` (a retry's backoff), ending early and returning True on cancel."""
        ...

    def on_cancel(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Run ``callback`` on cancel (it cuts a blocked socket); returns the unhook."""
        ...


@dataclass(frozen=True)
class FetchResult:
    """What fetch did: the sha256 of every file as verified, and whether the files
    are hard links to their source (then they take no extra disk space)."""

    sha256: Mapping[str, str]
    linked: bool = False


class Vendor(Protocol):
    name: str
    label: str

    def supports(self, ref: Reference) -> bool: ...

    def validate(self, ref: Reference) -> None:
        """Refuse (DownloadError) what can be refused without asking the source: the form calls it."""
        ...

    def plan(self, ref: Reference) -> Plan: ...

    def fetch(self, plan: Plan, dest: Path, progress: Progress, cancelled: CancelToken) -> FetchResult:
        """Write every planned file below dest, each verified."""
        ...

    def describe(self, plan: Plan) -> dict[str, Any]:
        """What the model is (architecture, parameters, context, quant…), from the planned
        files' headers read without downloading the weights; {} when nothing is known."""
        ...

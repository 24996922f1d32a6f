"""Resumable, verified file transfer over HTTP, shared by every vendor that downloads.

Owns the bytes end to end: a partial file on disk is continued with a Range
request (across process restarts too), every byte is hashed as it is written, a
request that goes quiet is abandoned and retried, and a finished file is checked
for size and sha256 before anyone calls it done.
"""

from __future__ import annotations

import email.utils
import errno
import hashlib
import logging
import re
import socket
import time
from collections.abc import Mapping
from pathlib import Path

import httpx
from django.conf import settings

from provisioner.vendors.base import (
    AccessDenied,
    Cancelled,
    CancelToken,
    DiskFull,
    DownloadError,
    NetworkError,
    NotFound,
    PlannedFile,
    Progress,
    VerificationError,
    inside,
)

logger = logging.getLogger(__name__)

HASH_BLOCK = 4 * 1024 * 1024
MAX_RETRY_AFTER_S = 300.0
USER_AGENT = "rbee-model-dashboard/1.0"
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


class _Retry(Exception):
    """A transient failure: the request is tried again after a pause."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


def make_client(headers: Mapping[str, str] | None = None) -> httpx.Client:
    """One client per job: connection reuse across files, redirects followed.

    httpx drops the Authorization header when a redirect leaves the origin, so a
    Hub token never reaches the CDN a file is redirected to.
    """
    timeout = httpx.Timeout(connect=15.0, read=settings.RBEE_STALL_TIMEOUT, write=30.0, pool=30.0)
    all_headers = {"User-Agent": USER_AGENT, **(headers or {})}
    return httpx.Client(timeout=timeout, follow_redirects=True, headers=all_headers, max_redirects=10)


def retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return min(MAX_RETRY_AFTER_S, max(0.0, float(value)))
    except ValueError:
        pass
    parsed = email.utils.parsedate_to_datetime(value) if value else None
    if parsed is None:
        return None
    return min(MAX_RETRY_AFTER_S, max(0.0, parsed.timestamp() - time.time()))


def hash_file(path: Path, upto: int | None = None) -> hashlib._Hash:
    hasher = hashlib.sha256()
    remaining = upto
    with open(path, "rb", buffering=0) as f:
        while remaining is None or remaining > 0:
            block = f.read(HASH_BLOCK if remaining is None else min(HASH_BLOCK, remaining))
            if not block:
                break
            hasher.update(block)
            if remaining is not None:
                remaining -= len(block)
    return hasher


def fetch_planned(
    client: httpx.Client, planned: PlannedFile, dest: Path, progress: Progress, cancelled: CancelToken
) -> str:
    """Download one planned file into ``dest`` at its (checked) relative path."""
    digest = download(
        client,
        planned.url,
        inside(dest, planned.path),
        label=planned.path,
        size=planned.size,
        sha256=planned.sha256,
        progress=progress,
        cancelled=cancelled,
    )
    progress.file_done(planned.path, planned.size, digest)
    return digest


def download(
    client: httpx.Client,
    url: str,
    part: Path,
    *,
    label: str,
    size: int,
    sha256: str | None,
    progress: Progress,
    cancelled: CancelToken,
) -> str:
    """Bring ``part`` to ``size`` bytes from ``url`` and return its verified sha256.

    Picks up whatever is already in ``part``. Transient faults are retried with
    exponential backoff (``Retry-After`` honoured); attempts that make no progress
    are bounded so the job always ends. A digest mismatch throws the file away
    and fetches it once more from scratch before failing.
    """
    part.parent.mkdir(parents=True, exist_ok=True)
    attempts = 0
    verified_once_failed = False
    announced_resume = False
    while True:
        if cancelled():
            raise Cancelled()
        offset = part.stat().st_size if part.exists() else 0
        if offset > size:
            progress.restarted(label, f"partial file is larger than the planned {size} bytes")
            part.unlink()
            offset = 0
        if offset and not announced_resume:
            progress.resumed(label, offset)
        announced_resume = True
        before = offset
        try:
            if offset < size or size == 0:
                _transfer(client, url, part, offset=offset, size=size, label=label, progress=progress, cancelled=cancelled)
        except _Retry as exc:
            if cancelled():
                raise Cancelled() from None
            now = part.stat().st_size if part.exists() else 0
            attempts = 1 if now > before else attempts + 1
            if attempts >= settings.RBEE_DOWNLOAD_ATTEMPTS:
                raise NetworkError(
                    f"{label}: giving up after {attempts} attempts without progress: {exc.reason}"
                ) from None
            delay = exc.retry_after
            if delay is None:
                delay = min(60.0, settings.RBEE_RETRY_BACKOFF * 2 ** (attempts - 1))
            progress.retry(label, exc.reason, attempts, delay)
            if cancelled.wait(delay):  # type: ignore[attr-defined]
                raise Cancelled() from None
            continue
        actual_size = part.stat().st_size
        digest = hash_file(part).hexdigest()
        problem = None
        if actual_size != size:
            problem = f"size is {actual_size} bytes, expected {size}"
        elif sha256 and digest != sha256.lower():
            problem = f"sha256 is {digest}, expected {sha256.lower()}"
        if problem is None:
            return digest
        part.unlink()
        if verified_once_failed:
            raise VerificationError(f"{label}: {problem} (again after a fresh download)")
        verified_once_failed = True
        progress.restarted(label, f"verification failed ({problem}); downloading it again from scratch")


def _transfer(
    client: httpx.Client,
    url: str,
    part: Path,
    *,
    offset: int,
    size: int,
    label: str,
    progress: Progress,
    cancelled: CancelToken,
) -> None:
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        with client.stream("GET", url, headers=headers) as response:
            unhook = cancelled.on_cancel(lambda: _abort(response))
            try:
                _receive(response, part, offset=offset, size=size, label=label, progress=progress, cancelled=cancelled)
            finally:
                unhook()
    except httpx.TimeoutException as exc:
        if isinstance(exc, httpx.ReadTimeout):
            raise _Retry(f"no data for {settings.RBEE_STALL_TIMEOUT:g} s, the transfer stalled") from None
        raise _Retry(f"timed out: {type(exc).__name__}") from None
    except httpx.TransportError as exc:
        if cancelled():
            raise Cancelled() from None
        raise _Retry(f"connection problem: {type(exc).__name__} {exc}".strip()) from None
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise DiskFull(f"{label}: the disk is full ({exc.strerror})") from None
        raise


def _receive(
    response: httpx.Response,
    part: Path,
    *,
    offset: int,
    size: int,
    label: str,
    progress: Progress,
    cancelled: CancelToken,
) -> None:
    status = response.status_code
    if status == 429 or status >= 500:
        raise _Retry(f"server answered {status}", retry_after_seconds(response.headers.get("Retry-After")))
    if status in (401, 403):
        detail = response.headers.get("X-Error-Message", "")
        raise AccessDenied(f"{label}: the server refused access ({status}){': ' + detail if detail else ''}")
    if status == 404:
        raise NotFound(f"{label}: not found on the server (404)")
    if status == 416 and offset:
        # Our partial is as long as (or longer than) the remote file: start over.
        part.unlink(missing_ok=True)
        raise _Retry("server could not satisfy the resume range; restarting the file", 0)
    if status not in (200, 206):
        raise DownloadError(f"{label}: unexpected answer {status} from the server")
    mode = "ab"
    if status == 206:
        match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
        if not match or int(match[1]) != offset:
            raise _Retry("server answered a different range than asked; restarting the file", 0)
    elif offset:
        progress.restarted(label, "the server ignored the resume request; starting the file again")
        mode = "wb"
        offset = 0
    length = response.headers.get("Content-Length")
    if length is not None and status == 200 and int(length) != size:
        raise VerificationError(f"{label}: the server sends {length} bytes, the plan said {size}")
    done = offset
    with open(part, mode, buffering=1024 * 1024) as f:
        for chunk in response.iter_raw():
            f.write(chunk)
            done += len(chunk)
            progress.advance(label, done)
            if cancelled():
                raise Cancelled()
            if done > size:
                raise VerificationError(f"{label}: the server sent more than the planned {size} bytes")
    if done < size:
        raise _Retry(f"connection closed after {done} of {size} bytes")


def _abort(response: httpx.Response) -> None:
    """Cut the socket under a blocked read so a cancel takes effect at once."""
    stream = response.extensions.get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

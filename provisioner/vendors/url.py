"""One file from a plain URL: ``https://host/path/file.gguf[#sha256=HEX]``.

The plan asks the server (HEAD, or a one-byte ranged GET where HEAD is refused,
as some signed-URL hosts do) for the size, the file name and the ETag before a
byte is written; the transfer itself is the shared resumable one, which checks the
size always and the sha256 when the reference carries one. A URL is typed by an
admin, so every host it (or a redirect) names must be a public address, and the
answer must be a file, not a web page.
"""

from __future__ import annotations

import posixpath
import re
import unicodedata
from collections.abc import Mapping
from email.message import Message
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from provisioner import metadata
from provisioner.references import Reference, UrlRef, is_loopback
from provisioner.vendors import transfer
from provisioner.vendors.base import (
    AccessDenied,
    CancelToken,
    DownloadError,
    FetchResult,
    NetworkError,
    NotFound,
    Plan,
    PlannedFile,
    Progress,
    safe_relative_path,
)

_CONTENT_RANGE_TOTAL = re.compile(r"^bytes\s+(?:\d+-\d+|\*)/(\d+)$")
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._+-]+")
MAX_NAME = 200


def sanitise_filename(name: str) -> str:
    """A remote file name reduced to one plain path component, or "" if nothing is left.

    Servers choose the Content-Disposition name, so it is treated as hostile:
    only its last component is kept (``../../x.gguf`` becomes ``x.gguf``), anything
    but letters, digits and ``._+-`` becomes ``_``, and leading dots go so the
    result is neither hidden nor ``..``.
    """
    name = unicodedata.normalize("NFKC", name)
    name = re.split(r"[/\\]", name)[-1]
    name = _UNSAFE_CHARS.sub("_", name).strip("_").lstrip(".")
    if len(name) > MAX_NAME:
        stem, dot, ext = name.rpartition(".")
        name = stem[: MAX_NAME - len(ext) - 1] + dot + ext if dot and len(ext) < 16 else name[:MAX_NAME]
    return name


def disposition_filename(value: str | None) -> str:
    """The file name a Content-Disposition header offers (RFC 6266, ``filename*`` preferred)."""
    if not value:
        return ""
    message = Message()
    message["Content-Disposition"] = value
    try:
        name = message.get_filename() or ""
    except (ValueError, LookupError):
        return ""
    return str(name)


_ETAG_UNSAFE = re.compile(r"[^A-Za-z0-9._:+/=-]")


class UrlVendor:
    """A URL is what an admin typed: every request it leads to is checked (transfer)."""

    name = "url"
    label = "URL"

    def supports(self, ref: Reference) -> bool:
        return isinstance(ref, UrlRef)

    def validate(self, ref: Reference) -> None:
        """Plain http is for loopback test servers only, and no host inside the network."""
        assert isinstance(ref, UrlRef)
        parts = urlsplit(ref.url)
        if parts.scheme != "https" and not (parts.scheme == "http" and is_loopback(parts.hostname or "")):
            raise DownloadError(
                f"{ref.url}: plain http:// is only allowed for loopback; use https://", kind="unsupported"
            )
        # Checked again on every hop of the download; here so the form refuses it at once.
        transfer.check_typed_url(ref.url, name_may_be_remote=True)

    def plan(self, ref: Reference) -> Plan:
        assert isinstance(ref, UrlRef)
        self.validate(ref)
        with transfer.request("HEAD", ref.url, headers={"Accept-Encoding": "identity"}) as response:
            status, headers = response.status_code, response.headers
        size = self._content_length(headers) if status == 200 else None
        if size is None:
            # Some hosts (signed S3 URLs, a few CDNs) refuse HEAD, or leave the
            # size out of it, but answer a ranged GET.
            status, headers, size = self._probe_with_get(ref.url)
        self._raise_for_status(status, ref.url)
        if transfer.is_html(headers.get("content-type")):
            raise DownloadError(
                f"{ref.url} answers a web page, not a file: give the file's own download link",
                kind="not_a_file",
            )
        if size is None:
            raise DownloadError(
                f"{ref.url}: the server does not tell the size of the file (no Content-Length), "
                "so the download could not be checked, resumed or fitted to the disk",
                kind="size_unknown",
            )
        filename = sanitise_filename(disposition_filename(headers.get("content-disposition")))
        if not filename:
            filename = sanitise_filename(unquote(posixpath.basename(urlsplit(ref.url).path))) or "download"
        filename = safe_relative_path(filename)
        etag = _ETAG_UNSAFE.sub("", headers.get("etag", "").removeprefix("W/"))[:128]
        return Plan(
            vendor=self.name,
            reference=ref.canonical,
            revision=etag,
            # The original URL, not the one redirected to: signed redirect targets expire.
            files=[PlannedFile(path=filename, size=size, sha256=ref.sha256, url=ref.url)],
            extra={"sha256_given": bool(ref.sha256)},
        )

    def _content_length(self, headers: Mapping[str, str]) -> int | None:
        encoding = headers.get("content-encoding", "identity").lower()
        length = headers.get("content-length", "")
        if encoding not in ("", "identity") or not length.isdigit():
            return None
        return int(length)

    def _probe_with_get(self, url: str) -> tuple[int, dict[str, str], int | None]:
        """Ask for one byte: a 206 tells the total size in Content-Range."""
        headers = {"Range": "bytes=0-0", "Accept-Encoding": "identity"}
        # The body is never read: closing the answer drops the connection.
        with transfer.request("GET", url, headers=headers) as response:
            status, answer = response.status_code, response.headers
        if status == 206:
            match = _CONTENT_RANGE_TOTAL.match(answer.get("content-range", "").strip())
            return status, answer, int(match[1]) if match else None
        if status == 200:
            return status, answer, self._content_length(answer)
        return status, answer, None

    def _raise_for_status(self, status: int, url: str) -> None:
        if status in (200, 206):
            return
        if status == 404 or status == 410:
            raise NotFound(f"{url}: not found on the server ({status})")
        if status in (401, 403):
            raise AccessDenied(f"{url}: the server refused access ({status})")
        if status == 429 or status >= 500:
            raise NetworkError(f"{url}: the server answered {status}; try again later")
        raise DownloadError(f"{url}: unexpected answer {status} from the server")

    def describe(self, plan: Plan) -> dict[str, Any]:
        """The file's header (a GGUF says what it is), read by Range like any typed URL."""
        urls = {f.path: f.url for f in plan.files}
        return metadata.describe(sorted(urls), metadata.remote_reader(urls, headers={}, trusted=False))

    def fetch(self, plan: Plan, dest: Path, progress: Progress, cancelled: CancelToken) -> FetchResult:
        digests = transfer.fetch_files(plan.files, dest, progress, cancelled, trusted=False, refuse_html=True)
        return FetchResult(sha256=digests)

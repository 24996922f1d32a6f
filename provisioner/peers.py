"""Hives serve each other the files they verified, so the origin serves a model about once.

Two halves, both in the hive worker process:

- ``PeerServer`` answers other hives' signed GETs (with Range) for files of this hive's
  catalog entries, and for files an in-progress download here has verified already
  (a ``model_download_file_done`` event with the file's sha256). A request names an
  entry id or a job id plus a relative path, resolved with ``inside()``: never a raw
  filesystem path, nothing else on the disk.
- ``fetch_from_peers`` runs before a job's vendor fetch: for each planned file with a
  recorded sha256 it finds another hive that holds (or just finished) that file at the
  same revision and pre-fills the job's partial file from it, verified against the
  plan's sha256. What it cannot get from a peer the vendor then fetches from the origin,
  resuming whatever bytes a failed peer left on disk. A job that another, older job of
  the same model and revision is fetching waits for that job's files rather than asking
  the origin too.

Peers are trusted for nothing: every byte is checked against the plan's sha256, and a
file without one comes from the origin.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import socket
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from django.conf import settings
from django.db import connection

from catalog.models import SERVED_FRESH_S, FleetSecret, Hive, ModelEntry
from provisioner import bandwidth
from provisioner.models import Action, DownloadJob, stale_before
from provisioner.vendors import transfer
from provisioner.vendors.base import Cancelled, CancelToken, DownloadError, Plan, PlannedFile, Progress, inside
from rbee.formatting import human_bytes

logger = logging.getLogger(__name__)

#: How long a signed peer request may be started for.
SIGNATURE_TTL_S = 60
#: Pause between looks for a file that a peer is still downloading.
POLL_S = 0.5
#: How long a job waits for an older job of the same model that has not started yet.
START_GRACE_S = 15.0
#: Bytes per sendfile call: small enough to honour a bandwidth limit smoothly.
SEND_BLOCK = 1024 * 1024

_PEER_PATH = re.compile(r"^/peer/(entry|job)/(\d+)/(.+)$")


# -- signing ------------------------------------------------------------------------------


def signature(secret: str, method: str, path: str, expires: int) -> str:
    """HMAC-SHA256 over what a request may do: the method, the exact path, until when."""
    message = f"{method.upper()}\n{path}\n{expires}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign(secret: str, method: str, path: str, *, now: float | None = None, ttl: int = SIGNATURE_TTL_S) -> str:
    """``path`` with the query that lets a fleet member request it for ``ttl`` seconds."""
    expires = int((time.time() if now is None else now) + ttl)
    return f"{path}?expires={expires}&sig={signature(secret, method, path, expires)}"


def check_signature(secret: str, method: str, target: str, *, now: float | None = None) -> bool:
    """True when ``target`` (path and query, as received) carries a valid, unexpired signature.

    An expiry further ahead than one TTL is refused too: no member signs for longer.
    """
    parts = urlsplit(target)
    query = parse_qs(parts.query)
    try:
        [expires_text], [given] = query["expires"], query["sig"]
        expires = int(expires_text)
    except (KeyError, ValueError):
        return False
    now = time.time() if now is None else now
    if not now <= expires <= now + SIGNATURE_TTL_S + 5:
        return False
    return hmac.compare_digest(signature(secret, method, parts.path, expires), given)


def file_path(kind: str, pk: int, relative: str) -> str:
    """The URL path a peer serves one file under: ``/peer/entry/<id>/<path>`` or ``/peer/job/<id>/<path>``."""
    return f"/peer/{kind}/{pk}/{quote(relative)}"


def signed_url(hive: Hive, kind: str, pk: int, relative: str) -> str:
    return hive.peer_url.rstrip("/") + sign(FleetSecret.get(), "GET", file_path(kind, pk, relative))


# -- what a hive serves ---------------------------------------------------------------------


def resolve(hive: Hive, path: str) -> Path | None:
    """The file on this hive's disk that the URL path names, or None.

    Only a file of one of this hive's ready catalog entries, or a file an active
    download of this hive has verified (size and sha256) already. The relative path is
    joined with ``inside()``, so no name reaches outside the entry's or job's folder.
    """
    match = _PEER_PATH.match(path)
    if match is None:
        return None
    kind, pk, relative = match[1], int(match[2]), unquote(match[3])
    try:
        if kind == "entry":
            entry = ModelEntry.objects.filter(pk=pk, hive=hive, status=ModelEntry.STATUS_READY).first()
            if entry is None or not entry.files.filter(path=relative).exists():
                return None
            target = inside(Path(entry.path), relative)
        else:
            job = DownloadJob.objects.filter(pk=pk, hive=hive, state__in=DownloadJob.ACTIVE_STATES).first()
            if job is None or not job.events.filter(action=Action.FILE_DONE, fields__file=relative).exists():
                return None
            target = inside(job.partial_dir, relative)
    except DownloadError:
        return None
    return target if target.is_file() else None


def _entry_named(hive: Hive, path: str) -> ModelEntry | None:
    match = _PEER_PATH.match(path)
    if match is None or match[1] != "entry":
        return None
    return ModelEntry.objects.filter(pk=int(match[2]), hive=hive).first()


def bandwidth_limit(hive: Hive) -> int | None:
    """Bytes per second this hive may send to peers: the hive's own limit where one is set.

    The one hook for per-hive limits (``Hive.max_bytes_per_s``): peer reads count
    against the same budget as downloads.
    """
    return int(hive.max_bytes_per_s) if hive.max_bytes_per_s else None


class _PeerHandler(BaseHTTPRequestHandler):
    server: PeerServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("peer %s: " + format, self.client_address[0], *args)

    def do_GET(self) -> None:
        self._serve(head=False)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def _refuse(self, status: HTTPStatus, reason: str) -> None:
        body = f"{reason}\n".encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _serve(self, *, head: bool) -> None:
        try:
            if not check_signature(FleetSecret.get(), "GET", self.path):
                self._refuse(HTTPStatus.FORBIDDEN, "a signed request from a hive of this fleet is needed")
                return
            hive = Hive.objects.get(pk=self.server.hive.pk)
            target = resolve(hive, urlsplit(self.path).path)
            if target is None:
                self._refuse(HTTPStatus.NOT_FOUND, "not a verified file of this hive's catalog")
                return
            entry = _entry_named(hive, urlsplit(self.path).path)
            self._send_file(
                target,
                head=head,
                limiter=bandwidth.for_hive(hive) if bandwidth_limit(hive) else None,
                entry=entry,
            )
        finally:
            connection.close()  # each request has a thread of its own, and so a connection

    def _send_file(
        self, target: Path, *, head: bool, limiter: bandwidth.HiveBandwidth | None, entry: ModelEntry | None = None
    ) -> None:
        with open(target, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            start, end = 0, size - 1
            wanted = self.headers.get("Range")
            if wanted:
                match = re.fullmatch(r"bytes=(\d+)-(\d*)", wanted.strip())
                if match is None or int(match[1]) >= size:
                    self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start = int(match[1])
                end = min(size - 1, int(match[2])) if match[2] else size - 1
                self.send_response(HTTPStatus.PARTIAL_CONTENT)
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            else:
                self.send_response(HTTPStatus.OK)
            length = max(0, end - start + 1)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(length))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            if head or not length:
                return
            self.wfile.flush()
            sent, stamped = 0, 0.0
            while sent < length:
                if entry is not None and time.monotonic() - stamped > SERVED_FRESH_S / 3:
                    entry.mark_served()  # eviction leaves an entry alone while a peer reads it
                    stamped = time.monotonic()
                n = os.sendfile(self.connection.fileno(), f.fileno(), start + sent, min(SEND_BLOCK, length - sent))
                if n == 0:
                    break
                sent += n
                if limiter is not None:
                    # The same bucket as the hive's own downloads: one cap for all its traffic.
                    limiter.consume(n)


class PeerServer(ThreadingHTTPServer):
    """The hive's file server for the other hives of the fleet, on its own threads."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, hive: Hive, listen: str) -> None:
        host, _, port = listen.rpartition(":")
        self.hive = hive
        self.address_family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
        super().__init__((host.strip("[]") or "0.0.0.0", int(port)), _PeerHandler)
        self.thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def advertised_url(self) -> str:
        """RBEE_PEER_URL, else this machine's name and the port listened on."""
        return settings.RBEE_PEER_URL or f"http://{socket.getfqdn()}:{self.port}"

    def start(self) -> PeerServer:
        self.thread = threading.Thread(target=self.serve_forever, name=f"hive-{self.hive.name}-peers", daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


# -- fetching from peers --------------------------------------------------------------------


def _peer_hives(job: DownloadJob) -> list[Hive]:
    return [h for h in Hive.objects.exclude(pk=job.hive_id).exclude(peer_url="") if h.is_online()]


def sources(job: DownloadJob, plan: Plan, planned: PlannedFile) -> list[tuple[str, str]]:
    """(hive name, signed URL) of every online peer holding this exact file verified.

    Ready entries of the same reference and revision first, then active downloads of
    it whose narration says the file was verified there.
    """
    hives = {h.pk: h for h in _peer_hives(job)}
    if not hives or not plan.revision:
        return []
    found: list[tuple[str, str]] = []
    entries = ModelEntry.objects.filter(
        hive__in=hives, reference=job.reference, revision=plan.revision, status=ModelEntry.STATUS_READY,
        files__path=planned.path, files__sha256=planned.sha256,
    ).order_by("pk")
    for entry in entries:
        found.append((hives[entry.hive_id].name, signed_url(hives[entry.hive_id], "entry", entry.pk, planned.path)))
    jobs = DownloadJob.objects.active().filter(hive__in=hives, reference=job.reference, revision=plan.revision)
    done = jobs.filter(
        events__action=Action.FILE_DONE, events__fields__file=planned.path, events__fields__sha256=planned.sha256
    ).distinct().order_by("pk")
    for other in done:
        found.append((hives[other.hive_id].name, signed_url(hives[other.hive_id], "job", other.pk, planned.path)))
    return found


def leader(job: DownloadJob, plan: Plan, waited_s: float) -> DownloadJob | None:
    """An older job of the same model and revision on another hive that is fetching it
    now (or, for a short grace, about to start): worth waiting for instead of asking
    the origin. The oldest job of a group has none and fetches from the origin."""
    hives = [h.pk for h in _peer_hives(job)]
    older = (
        DownloadJob.objects.active()
        .filter(hive__in=hives, reference=job.reference, pk__lt=job.pk, revision__in=("", plan.revision))
        .select_related("hive")
        .order_by("pk")
    )
    for other in older:
        if other.state == DownloadJob.RUNNING and other.heartbeat_at and other.heartbeat_at >= stale_before():
            return other
        if other.state == DownloadJob.QUEUED and waited_s < START_GRACE_S:
            return other
    return None


def _complete(part: Path, planned: PlannedFile) -> bool:
    try:
        return part.stat().st_size == planned.size
    except FileNotFoundError:
        return False


def fetch_from_peers(job: DownloadJob, plan: Plan, progress: Progress, cancelled: CancelToken) -> None:
    """Pre-fill the job's partial folder from peers, file by file; the vendor fetches the rest.

    Nothing here fails the job: a peer that refuses, vanishes or sends bad bytes is
    skipped (its verified-or-not bytes are checked again by the vendor's fetch), and
    what no peer has is left to the origin.
    """
    if not settings.RBEE_SCALED or not plan.revision or plan.vendor == "local":
        return  # one hive, no revision to match, or a machine's own files (file:)
    if not Hive.objects.exclude(pk=job.hive_id).exclude(peer_url="").exists():
        return
    started = time.monotonic()
    announced_wait = False
    for planned in plan.files:
        if not planned.sha256:
            continue  # nothing to check a peer's bytes against
        try:
            part = inside(job.partial_dir, planned.path)
        except DownloadError:
            return  # the vendor's fetch refuses the name with its own words
        if _complete(part, planned):
            continue
        bad: set[str] = set()
        waited_for_file = time.monotonic()
        while True:
            if cancelled():
                raise Cancelled()
            got = False
            for hive_name, url in sources(job, plan, planned):
                key = url.split("?", 1)[0]
                if key in bad:
                    continue
                if _from_peer(job, planned, part, hive_name, url, progress, cancelled):
                    got = True
                    break
                bad.add(key)
            if got:
                break
            waiting_for = leader(job, plan, time.monotonic() - started)
            if waiting_for is None or time.monotonic() - waited_for_file > settings.RBEE_PEER_WAIT_S:
                break  # the origin it is
            if not announced_wait:
                announced_wait = True
                job.narrate(
                    Action.SOURCE,
                    f"Waiting for hive '{waiting_for.hive.name}', which is downloading the same revision, "
                    "to fetch from it instead of the origin",
                    fields={"source": "peer", "hive": waiting_for.hive.name, "waiting": True},
                )
            if cancelled.wait(POLL_S):
                raise Cancelled()


def _from_peer(
    job: DownloadJob,
    planned: PlannedFile,
    part: Path,
    hive_name: str,
    url: str,
    progress: Progress,
    cancelled: CancelToken,
) -> bool:
    """One file from one peer, verified against the plan; False leaves it to the next source."""
    offset = part.stat().st_size if part.exists() else 0
    job.narrate(
        Action.SOURCE,
        f"⇄ {planned.path} ({human_bytes(planned.size)}) from hive '{hive_name}'",
        target=planned.path,
        fields={"source": "peer", "hive": hive_name, "file": planned.path},
    )
    try:
        digest = transfer.download(
            url,
            part,
            label=planned.path,
            size=planned.size,
            sha256=planned.sha256,
            progress=progress,
            cancelled=cancelled,
            headers={},
            trusted=True,  # a configured fleet member, on a private address by design
        )
    except Cancelled:
        raise
    except DownloadError as exc:
        logger.warning("job %s: %s from hive %s failed: %s", job.pk, planned.path, hive_name, exc)
        job.narrate(
            Action.SOURCE,
            f"{planned.path}: hive '{hive_name}' could not serve it ({exc}); trying another source",
            level="warn",
            target=planned.path,
            fields={"source": "peer", "hive": hive_name, "file": planned.path, "error": str(exc)},
        )
        return False
    progress.file_done(planned.path, planned.size, digest)
    job.add_source_bytes(peers=max(0, planned.size - offset))
    return True


def prefill(job: DownloadJob, plan: Plan, progress: Progress, cancelled: CancelToken, *, origin: str) -> None:
    """What a job does before its vendor's fetch: take what peers have, then say what
    is left for the origin (the vendor's fetch finds the peers' files complete and only
    verifies them)."""
    fetch_from_peers(job, plan, progress, cancelled)
    announce_origin(job, plan, origin)


def announce_origin(job: DownloadJob, plan: Plan, origin: str) -> None:
    """Say what is left for the origin, if anything, before the vendor fetches it."""
    missing = [f for f in plan.files if not _complete_safe(job, f)]
    if not missing:
        return
    size = sum(f.size for f in missing)
    job.narrate(
        Action.SOURCE,
        f"⇣ {len(missing)} file(s), {human_bytes(size)}, from {origin}",
        fields={"source": "origin", "files": len(missing), "bytes": size},
    )


def _complete_safe(job: DownloadJob, planned: PlannedFile) -> bool:
    try:
        return _complete(inside(job.partial_dir, planned.path), planned)
    except DownloadError:
        return False

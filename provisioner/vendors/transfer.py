"""The bytes over HTTP: every request a vendor makes to a download source goes through here.

Owns the bytes end to end: a partial file on disk is continued with a Range
request (across process restarts too), every byte is hashed as it is written, a
request that goes quiet is abandoned and retried, and a finished file is checked
for size, sha256 and whatever else the vendor knows (``verify``) before anyone
calls it done.

Owns where requests go, too. What an admin types (a URL, an ``ollama:HOST/…``
registry) is not trusted to point outside: every host of every hop, redirects
included, is resolved and refused unless each address it has is a global one
(or listed in ``RBEE_ALLOWED_PRIVATE_HOSTS``), and the connection is then made to
exactly the address that was checked, so a DNS answer that changes between the
check and the connect (rebinding) gains nothing. TLS still verifies, and the
``Host`` header still names, the host name. Configured endpoints (``HF_ENDPOINT``,
``RBEE_OLLAMA_REGISTRY``) are trusted with their redirects: the operator chose them,
and the Hub's CDN redirects are part of what was chosen. Through a proxy the
target is checked the same way before anything is sent, but the proxy resolves
the name itself: the operator's proxy enforces its own egress rules.

Nothing a remote end sends is repeated in an error: transport failures become
fixed messages naming the failure and host:port, so a service that is not HTTP
(a database banner, say) cannot have its first line shown on a page.
"""

from __future__ import annotations

import base64
import contextlib
import email.utils
import errno
import hashlib
import http.client
import ipaddress
import json
import logging
import mmap
import os
import re
import socket
import ssl
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

import httpx
from django.conf import settings

from provisioner.references import is_loopback
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
    StopSignal,
    VerificationError,
    inside,
)

logger = logging.getLogger(__name__)

HASH_BLOCK = 4 * 1024 * 1024
#: Received bytes are written (and hashed, off-thread) once this many are pending, or
#: FLUSH_S after the last write: what a kill -9 can lose, and a resume re-fetch, stays small.
WRITE_BLOCK = 1024 * 1024
FLUSH_S = 1.0
MAX_RETRY_AFTER_S = 300.0
MAX_REDIRECTS = 10
USER_AGENT = "rbee-model-dashboard/1.0"
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
_REDIRECTS = {301, 302, 303, 307, 308}
_RING = 3  # buffers in flight: one filling, up to two being hashed

#: A check run on a finished file after size and sha256 passed: a problem, or None.
Verify = Callable[[Path], "str | None"]


class RefusedAddress(DownloadError):
    """A typed reference (or a redirect it led to) points at an address inside.

    The message is the same whatever listens there, and nothing was sent: the
    dashboard cannot be used to probe the network it sits in.
    """

    kind = "refused_address"


class _Retry(Exception):
    """A transient failure: the request is tried again after a pause."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


# -- where a request may connect -------------------------------------------------------

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
AddrInfo = tuple[Any, ...]


def allowed_private_hosts() -> tuple[frozenset[str], tuple[Network, ...]]:
    """RBEE_ALLOWED_PRIVATE_HOSTS as host names and networks (a single IP is a /32 or /128)."""
    raw = getattr(settings, "RBEE_ALLOWED_PRIVATE_HOSTS", ())
    items = raw.split(",") if isinstance(raw, str) else list(raw)
    names: set[str] = set()
    networks: list[Network] = []
    for item in (str(i).strip().lower() for i in items):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item.strip("[]"), strict=False))
        except ValueError:
            names.add(item.rstrip("."))
    return frozenset(names), tuple(networks)


_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _is_inside(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Loopback, private, link-local (cloud metadata), multicast, unspecified, reserved…

    An IPv4 address inside IPv6 (mapped, or NAT64's well-known prefix, which a
    gateway translates back) is judged as the IPv4 address it reaches.
    """
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        elif address in _NAT64:
            address = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return not address.is_global or address.is_multicast


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def resolve_checked(host: str, port: int) -> list[AddrInfo]:
    """The addresses ``host`` has, refused unless every one may be reached.

    All of them, not the first: a name with one public and one private address
    would otherwise reach inside on whichever the connect happens to try.
    """
    names, networks = allowed_private_hosts()
    name = host.strip("[]").lower().rstrip(".")
    try:
        infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise NetworkError(f"host name {name} not found", kind="dns") from None
    if name in names:
        return infos
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if _is_inside(address) and not any(address in network for network in networks):
            raise RefusedAddress(
                f"refusing to connect to {name}:{port}: it is a loopback, private, link-local or otherwise "
                "non-public address (an operator can allow it in RBEE_ALLOWED_PRIVATE_HOSTS)"
            )
    return infos


def _port(url: str) -> int:
    """The port ``url`` names or implies, refusing what cannot be downloaded from."""
    parts = urlsplit(url)
    if not parts.hostname or parts.scheme not in ("http", "https"):
        raise DownloadError("only http and https URLs with a host can be downloaded", kind="unsupported")
    try:
        return parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise DownloadError("the URL has an invalid port", kind="unsupported") from None


def check_typed_url(url: str, *, name_may_be_remote: bool = False) -> list[AddrInfo]:
    """Refuse a typed URL whose host is inside, or plain http:// beyond loopback; the addresses to use.

    ``name_may_be_remote``: a name this machine cannot resolve passes (no addresses),
    for a proxy, which resolves names itself, and for the form, which checks early
    what the download checks again on every hop.
    """
    parts = urlsplit(url)
    host, port = parts.hostname or "", _port(url)
    if parts.scheme == "http" and not is_loopback(host):
        if _is_address(host):
            resolve_checked(host, port)  # an address inside is refused as such, first
        raise RefusedAddress(f"refusing plain http:// to {host}:{port}; only https:// leaves this machine")
    try:
        return resolve_checked(host, port)
    except NetworkError:
        if name_may_be_remote:
            return []
        raise


def _connect_to(infos: list[AddrInfo]) -> Callable[..., socket.socket]:
    """socket.create_connection, to the checked addresses and no others."""

    def create_connection(_address: object, timeout: float | None = None, source: object = None) -> socket.socket:
        failure: OSError | None = None
        for family, kind, proto, _name, sockaddr in infos:
            sock = socket.socket(family, kind, proto)
            try:
                sock.settimeout(timeout)
                sock.connect(sockaddr)
            except OSError as exc:
                sock.close()
                failure = exc
                continue
            return sock
        raise failure or OSError(errno.EHOSTUNREACH, "no address")

    return create_connection


def _host_port(url: str) -> str:
    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        port = 0
    return f"{parts.hostname}:{port}"


def transport_failure(exc: BaseException, url: str) -> str:
    """A fixed description of a failed connection or a non-HTTP answer.

    Never the exception's text: http.client puts the status line it could not
    parse there, which is whatever the service on that port says first.
    """
    if isinstance(exc, http.client.RemoteDisconnected):
        what = "the server closed the connection without answering"
    elif isinstance(exc, TimeoutError):
        what = "the connection timed out"
    elif isinstance(exc, ConnectionRefusedError):
        what = "the connection was refused"
    elif isinstance(exc, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)):
        what = "the connection was reset"
    elif isinstance(exc, ssl.SSLCertVerificationError):
        what = "the server's TLS certificate is not valid for it"
    elif isinstance(exc, ssl.SSLError):
        what = "the TLS handshake failed"
    elif isinstance(exc, socket.gaierror):
        what = "the host name was not found"
    elif isinstance(exc, http.client.HTTPException):
        what = "the server did not answer HTTP"
    else:
        what = "the connection failed"
    return f"{what} ({_host_port(url)})"


_ssl_context: ssl.SSLContext | None = None


def _tls() -> ssl.SSLContext:
    """httpx's context: certifi's roots, or SSL_CERT_FILE / SSL_CERT_DIR, as the Hub client uses."""
    global _ssl_context
    if _ssl_context is None:
        _ssl_context = httpx.create_ssl_context()
    return _ssl_context


def _connect(url: str, *, trusted: bool) -> tuple[http.client.HTTPConnection, str, dict[str, str]]:
    """A connection for one request to ``url``: the request target, and any proxy headers.

    Goes through the proxy the environment names (``HTTPS_PROXY``, ``HTTP_PROXY``,
    ``NO_PROXY``), as curl, httpx and huggingface_hub do: HTTPS through a CONNECT
    tunnel, plain HTTP with the absolute URL as target.
    """
    port = _port(url)
    parts = urlsplit(url)
    host = parts.hostname or ""
    proxy = None if urllib.request.proxy_bypass(host) else urllib.request.getproxies().get(parts.scheme)
    # Through a proxy, a name this machine cannot resolve is the proxy's to resolve.
    infos = [] if trusted else check_typed_url(url, name_may_be_remote=bool(proxy))
    timeout = settings.RBEE_STALL_TIMEOUT
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if not proxy:
        conn: http.client.HTTPConnection
        if parts.scheme == "https":
            conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=_tls())
        else:
            conn = http.client.HTTPConnection(host, port, timeout=timeout)
        if infos:
            # TLS (SNI, certificate) and Host still use the name; the socket goes to the checked address.
            conn._create_connection = _connect_to(infos)  # type: ignore[attr-defined]
        return conn, target, {}
    via = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    if not via.hostname:
        raise DownloadError("the proxy setting names no host")
    auth = {}
    if via.username:
        secret = f"{unquote(via.username)}:{unquote(via.password or '')}".encode()
        auth["Proxy-Authorization"] = "Basic " + base64.b64encode(secret).decode()
    if parts.scheme == "https":
        tunnel = http.client.HTTPSConnection(via.hostname, via.port or 8080, timeout=timeout, context=_tls())
        tunnel.set_tunnel(host, port, headers=auth)
        return tunnel, target, {}
    conn = http.client.HTTPConnection(via.hostname, via.port or 8080, timeout=timeout)
    return conn, urlunsplit((parts.scheme, parts.netloc, parts.path or "/", parts.query, "")), auth


# -- one request -----------------------------------------------------------------------


class Response:
    """An answer whose body has not been read: status and headers (lower-case names)."""

    def __init__(self, url: str, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse) -> None:
        self.url = url
        self.conn = conn
        self.resp = resp
        self.status_code = resp.status
        self.headers = {k.lower(): v for k, v in resp.getheaders()}

    def read(self, limit: int) -> bytes:
        """The whole body, refused when longer than ``limit`` bytes."""
        try:
            body = self.resp.read(limit + 1)
        except (OSError, http.client.HTTPException) as exc:
            raise NetworkError(transport_failure(exc, self.url)) from None
        if len(body) > limit:
            raise DownloadError(f"the answer from {_host_port(self.url)} is larger than {limit} bytes")
        return body

    def close(self) -> None:
        self.resp.close()
        self.conn.close()

    def __enter__(self) -> Response:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _origin(url: str) -> tuple[str, str | None, int | None]:
    parts = urlsplit(url)
    return parts.scheme, parts.hostname, parts.port


def _open(method: str, url: str, headers: Mapping[str, str], *, trusted: bool) -> Response:
    """One request with redirects followed, every hop connected (and checked) afresh.

    Authorization is dropped when a redirect leaves the origin, so a Hub token
    never reaches the CDN a file is redirected to. The body is read with
    http.client straight into our buffers: on a fast link httpx's per-chunk copies
    cost more CPU than the transfer itself (bench/). A transport failure is a
    NetworkError in fixed words, naming the hop that failed.
    """
    all_headers = {"User-Agent": USER_AGENT, **headers}
    for _ in range(MAX_REDIRECTS + 1):
        conn, target, proxy_headers = _connect(url, trusted=trusted)
        try:
            conn.request(method, target, headers={**all_headers, **proxy_headers})
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise NetworkError(transport_failure(exc, url)) from None
        except BaseException:
            conn.close()
            raise
        location = resp.getheader("Location")
        if resp.status in _REDIRECTS and location:
            resp.close()
            conn.close()
            new = urljoin(url, location)
            if _origin(new) != _origin(url):
                all_headers = {k: v for k, v in all_headers.items() if k.lower() != "authorization"}
            url = new
            continue
        return Response(url, conn, resp)
    raise NetworkError(f"more than {MAX_REDIRECTS} redirects ({_host_port(url)})")


def request(method: str, url: str, *, headers: Mapping[str, str] | None = None, trusted: bool = False) -> Response:
    """A request whose answer the caller reads (plans, manifests, tokens); close it after.

    ``trusted`` only for configured endpoints; anything typed is checked hop by hop.
    """
    return _open(method, url, headers or {}, trusted=trusted)


def retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return min(MAX_RETRY_AFTER_S, max(0.0, float(value)))
    except ValueError:
        pass
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
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


# -- one file --------------------------------------------------------------------------


def fetch_file(
    planned: PlannedFile,
    dest: Path,
    progress: Progress,
    cancelled: CancelToken,
    *,
    headers: Mapping[str, str] | None = None,
    trusted: bool = False,
    verify: Verify | None = None,
    refuse_html: bool = False,
) -> str:
    """Download one planned file into ``dest`` at its (checked) relative path; its sha256."""
    verifiers = {planned.path: verify} if verify is not None else None
    digests = fetch_files(
        [planned],
        dest,
        progress,
        cancelled,
        headers=headers,
        trusted=trusted,
        verify=verifiers,
        refuse_html=refuse_html,
    )
    return digests[planned.path]


def fetch_files(
    files: Sequence[PlannedFile],
    dest: Path,
    progress: Progress,
    cancelled: CancelToken,
    *,
    headers: Mapping[str, str] | None = None,
    trusted: bool = False,
    verify: Mapping[str, Verify] | None = None,
    refuse_html: bool = False,
) -> dict[str, str]:
    """Download the planned files into ``dest``, in parallel; the sha256 of each, verified.

    One job opens at most ``RBEE_CONNECTIONS`` connections, shared by its files and
    their parts: files run side by side, and a file of at least ``RBEE_PART_MIN_BYTES``
    is split into byte ranges fetched at once (a per-connection throttled origin is
    then no slower than its total limit). ``headers`` go with every request
    (Authorization is dropped on a redirect to another origin); ``trusted`` only for
    configured endpoints; ``verify`` maps a path to the vendor's own check of the
    finished file, failed the way a sha256 mismatch is; ``refuse_html`` for sources
    where a web page means "not the file you asked for".
    """
    for planned in files:
        inside(dest, planned.path)  # every name is checked before anything is written
    slots = _Connections(settings.RBEE_CONNECTIONS)
    stop = _Stop(cancelled)
    failure: list[BaseException] = []

    def one(planned: PlannedFile) -> str:
        try:
            digest = _fetch_one(
                planned,
                inside(dest, planned.path),
                progress,
                stop,
                slots,
                headers=headers or {},
                trusted=trusted,
                verify=(verify or {}).get(planned.path),
                refuse_html=refuse_html,
            )
        except BaseException as exc:
            if not failure:
                failure.append(exc)
            stop.set()  # one file failing ends the job: its siblings stop, keeping their bytes
            raise
        progress.file_done(planned.path, planned.size, digest)
        return digest

    try:
        if not files:
            return {}
        if len(files) == 1:
            return {files[0].path: one(files[0])}
        with ThreadPoolExecutor(min(len(files), settings.RBEE_CONNECTIONS), thread_name_prefix="file") as pool:
            futures = {planned.path: pool.submit(one, planned) for planned in files}
            for future in futures.values():
                future.exception()
        if failure:
            raise failure[0]
        return {path: future.result() for path, future in futures.items()}
    finally:
        stop.close()


def _fetch_one(
    planned: PlannedFile,
    target: Path,
    progress: Progress,
    cancelled: CancelToken,
    slots: _Connections,
    *,
    headers: Mapping[str, str],
    trusted: bool,
    verify: Verify | None,
    refuse_html: bool,
) -> str:
    args: dict[str, Any] = {
        "label": planned.path,
        "size": planned.size,
        "sha256": planned.sha256,
        "progress": progress,
        "cancelled": cancelled,
        "headers": headers,
        "trusted": trusted,
        "verify": verify,
        "refuse_html": refuse_html,
        "slots": slots,
    }
    if _part_count(planned.size) < 2:
        state = target.with_name(target.name + PARTS_SUFFIX)
        if state.exists():  # pieces from a run with other settings: the sparse file's size means nothing
            target.unlink(missing_ok=True)
            state.unlink()
        return download(planned.url, target, **args)
    state = target.with_name(target.name + PARTS_SUFFIX)
    if not state.exists() and slots.widening in ("single", "fast", "reverted"):
        # One stream first, the fast path (its sha256 from the bytes in hand): while one
        # connection proves fast, or more did not pay, the file stays one stream; judged
        # slow, it goes on in parallel parts from the bytes this stream wrote.
        probe = _Stop(cancelled)
        try:
            return download(
                planned.url, target, **{**args, "progress": _Probe(progress, slots, probe), "cancelled": probe}
            )
        except Cancelled:
            if cancelled():
                raise
        finally:
            probe.close()
    try:
        return _PartedFile(planned.url, target, **args).run()
    except _RangeIgnored:
        progress.restarted(planned.path, "the server ignored the range request; fetching the file as one stream")
        return download(planned.url, target, **args)


class _Probe:
    """The progress of a file's first stream, judging its rate once for the job.

    Forwards everything; after JUDGE_S of bytes it tells the job's connections how
    fast one connection is, and stops the stream (``stop``) when they decide that
    every connection is worth trying.
    """

    def __init__(self, progress: Progress, slots: _Connections, stop: _Stop) -> None:
        self.progress, self.slots, self.stop = progress, slots, stop
        self.first: tuple[float, int] | None = None
        self.judged = False

    def advance(self, path: str, file_bytes: int) -> None:
        self.progress.advance(path, file_bytes)
        now = time.monotonic()
        if self.first is None:
            self.first = (now, file_bytes)
            return
        since, start = self.first
        if not self.judged and now - since >= JUDGE_S:
            self.judged = True
            self.slots.judge((file_bytes - start) / (now - since))
        if self.slots.wide:
            self.stop.set()

    def file_done(self, path: str, size: int, sha256: str) -> None:
        self.progress.file_done(path, size, sha256)

    def retry(self, path: str, reason: str, attempt: int, delay_s: float) -> None:
        self.progress.retry(path, reason, attempt, delay_s)

    def resumed(self, path: str, offset: int) -> None:
        self.progress.resumed(path, offset)

    def restarted(self, path: str, reason: str) -> None:
        self.progress.restarted(path, reason)


class _Digest:
    """The sha256 of the first ``count`` bytes of a partial file, kept up to date as it grows."""

    def __init__(self) -> None:
        self.hasher = hashlib.sha256()
        self.count = 0

    def catch_up(self, part: Path, offset: int) -> None:
        """Make the digest cover exactly the ``offset`` bytes on disk (after a resume or a fault)."""
        if self.count != offset:
            self.hasher = hash_file(part, upto=offset) if offset else hashlib.sha256()
            self.count = offset


def download(
    url: str,
    part: Path,
    *,
    label: str,
    size: int,
    sha256: str | None,
    progress: Progress,
    cancelled: CancelToken,
    headers: Mapping[str, str],
    trusted: bool,
    verify: Verify | None = None,
    refuse_html: bool = False,
    slots: _Connections | None = None,
) -> str:
    """Bring ``part`` to ``size`` bytes from ``url`` and return its verified sha256.

    Picks up whatever is already in ``part``. Transient faults are retried with
    exponential backoff (``Retry-After`` honoured); attempts that make no progress
    are bounded so the job always ends. A file that fails verification (size,
    sha256, then ``verify``) is thrown away and fetched once more from scratch
    before the job fails: one bad transfer is bad luck, two is the source.
    """
    part.parent.mkdir(parents=True, exist_ok=True)
    attempts = 0
    failed_once = False
    announced_resume = False
    digest = _Digest()
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
                digest.catch_up(part, offset)
                with slots.hold(cancelled) if slots else contextlib.nullcontext():
                    _transfer(
                        url,
                        part,
                        offset=offset,
                        size=size,
                        label=label,
                        progress=progress,
                        cancelled=cancelled,
                        digest=digest,
                        headers=headers,
                        trusted=trusted,
                        refuse_html=refuse_html,
                    )
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
            if cancelled.wait(delay):
                raise Cancelled() from None
            continue
        actual_size = part.stat().st_size
        digest.catch_up(part, actual_size)  # a no-op when every byte was hashed as it was written
        hexdigest = digest.hasher.hexdigest()
        problem = None
        if actual_size != size:
            problem = f"size is {actual_size} bytes, expected {size}"
        elif sha256 and hexdigest != sha256.lower():
            problem = f"sha256 is {hexdigest}, expected {sha256.lower()}"
        elif verify is not None:
            problem = verify(part)
        if problem is None:
            return hexdigest
        part.unlink()
        digest = _Digest()
        if failed_once:
            raise VerificationError(f"{label}: {problem} (again after a fresh download)")
        failed_once = True
        progress.restarted(label, f"verification failed ({problem}); downloading it again from scratch")


def _transfer(
    url: str,
    part: Path,
    *,
    offset: int,
    size: int,
    label: str,
    progress: Progress,
    cancelled: CancelToken,
    digest: _Digest,
    headers: Mapping[str, str],
    trusted: bool,
    refuse_html: bool,
) -> None:
    wanted = {**headers, "Accept-Encoding": "identity"}
    if offset:
        wanted["Range"] = f"bytes={offset}-"
    response: Response | None = None
    try:
        response = _open("GET", url, wanted, trusted=trusted)
        unhook = cancelled.on_cancel(lambda: _abort(response))
        try:
            _receive(
                response,
                part,
                offset=offset,
                size=size,
                label=label,
                progress=progress,
                cancelled=cancelled,
                digest=digest,
                trusted=trusted,
                refuse_html=refuse_html,
            )
        finally:
            unhook()
    except NetworkError as exc:
        if cancelled():
            raise Cancelled() from None
        raise _Retry(str(exc)) from None
    except TimeoutError:
        raise _Retry(f"no data for {settings.RBEE_STALL_TIMEOUT:g} s, the transfer stalled") from None
    except (OSError, http.client.HTTPException) as exc:
        if cancelled():
            raise Cancelled() from None
        raise _Retry(transport_failure(exc, response.url if response else url)) from None
    finally:
        if response is not None:
            response.conn.close()


def _write_all(fd: int, view: memoryview, label: str) -> None:
    try:
        while view:
            view = view[os.write(fd, view) :]
    except OSError as exc:  # not a network fault: never retried
        if exc.errno == errno.ENOSPC:
            raise DiskFull(f"{label}: the disk is full ({exc.strerror})") from None
        raise DownloadError(f"{label}: cannot write {exc.filename or 'the file'}: {exc.strerror}") from None


def _receive(
    response: Response,
    part: Path,
    *,
    offset: int,
    size: int,
    label: str,
    progress: Progress,
    cancelled: CancelToken,
    digest: _Digest,
    trusted: bool,
    refuse_html: bool,
) -> None:
    status = response.status_code
    if status == 429 or status >= 500:
        raise _Retry(f"server answered {status}", retry_after_seconds(response.headers.get("retry-after")))
    if status in (401, 403):
        # The Hub explains a refusal (gated, private) in this header; a typed source's words are not repeated.
        detail = response.headers.get("x-error-message", "")[:300] if trusted else ""
        raise AccessDenied(f"{label}: the server refused access ({status}){': ' + detail if detail else ''}")
    if status == 404:
        raise NotFound(f"{label}: not found on the server (404)")
    if status == 416 and offset:
        # Our partial is as long as (or longer than) the remote file: start over.
        part.unlink(missing_ok=True)
        raise _Retry("server could not satisfy the resume range; restarting the file", 0)
    if status not in (200, 206):
        raise DownloadError(f"{label}: unexpected answer {status} from the server")
    if refuse_html and is_html(response.headers.get("content-type")):
        raise DownloadError(f"{label}: the server answered a web page, not a file", kind="not_a_file")
    mode = "ab"
    if status == 206:
        match = _CONTENT_RANGE.match(response.headers.get("content-range", ""))
        if not match or int(match[1]) != offset:
            raise _Retry("server answered a different range than asked; restarting the file", 0)
    elif offset:
        progress.restarted(label, "the server ignored the resume request; starting the file again")
        mode = "wb"
        offset = 0
        digest.catch_up(part, 0)
    length = response.headers.get("content-length")
    if length is not None and not length.isdigit():
        raise _Retry(f"the server sent an invalid Content-Length ({_host_port(response.url)})")
    if length is not None and status == 200 and int(length) != size:
        raise VerificationError(f"{label}: the server sends {length} bytes, the plan said {size}")
    resp = response.resp
    # Content-Length bodies: one recv straight into our buffer per read (readinto1);
    # anything else (chunked) through http.client's own decoding.
    remaining = int(length) if length is not None and not resp.chunked else None

    def read_into(view: memoryview) -> int:
        nonlocal remaining
        if remaining is None:
            return resp.readinto(view)
        if remaining <= 0:
            return 0
        n = resp.fp.readinto1(view[: min(len(view), remaining)])
        remaining -= n
        return n

    done = offset
    ring = [memoryview(bytearray(WRITE_BLOCK)) for _ in range(_RING)]
    hashing: list[Future[None] | None] = [None] * _RING
    pool = ThreadPoolExecutor(1, thread_name_prefix="sha256")
    current, fill, flushed_at = 0, 0, time.monotonic()

    def flush() -> None:
        nonlocal current, fill, flushed_at
        if not fill:
            return
        block = ring[current][:fill]
        _write_all(fd, block, label)
        hashing[current] = pool.submit(digest.hasher.update, block)
        digest.count += fill
        current, fill, flushed_at = (current + 1) % _RING, 0, time.monotonic()
        previous = hashing[current]
        if previous is not None:
            previous.result()  # that buffer is free again
            hashing[current] = None

    with open(part, mode, buffering=0) as f:
        fd = f.fileno()
        try:
            while True:
                n = read_into(ring[current][fill:])
                if not n:
                    break
                fill += n
                done += n
                progress.advance(label, done)
                if cancelled():
                    raise Cancelled()
                if done > size:
                    raise VerificationError(f"{label}: the server sent more than the planned {size} bytes")
                if fill == WRITE_BLOCK or time.monotonic() - flushed_at >= FLUSH_S:
                    flush()
        finally:
            try:
                flush()  # bytes received are kept for a resume
            finally:
                for future in hashing:
                    if future is not None:
                        future.result()
                pool.shutdown()
    if done < size:
        raise _Retry(f"connection closed after {done} of {size} bytes")


# -- one file in parallel pieces -------------------------------------------------------

PARTS_SUFFIX = ".parts"
#: How often the pieces' state is written beside the partial file (and at every stop).
SAVE_S = 0.5
#: A file's parts retry on their own; the admin hears of it at most this often per file.
RETRY_NARRATION_S = 2.0
#: A file that changes on the server more often than this during one download fails.
MAX_CHANGES = 3
#: At most this many pieces per file, so the state stays small for a huge file.
MAX_PIECES = 1024
PIECE_MIN = 64 * 1024
#: When big files use all of RBEE_CONNECTIONS (see _Connections): a per-connection throttled
#: origin gets them all at once; a fast origin, or a machine too busy to go faster, is not
#: split for nothing (on loopback, eight streams cost twice the kernel time of one).
FAST_CONNECTION_BPS = 100_000_000
JUDGE_S = 0.25
#: How long all connections run before their rate decides whether they stay.
WEIGH_S = 0.5
#: What one request asks for at most once connections take runs of pieces.
RUN_BYTES = 256 * 1024 * 1024


class _RangeIgnored(Exception):
    """The server answered a ranged GET with the whole file: it gets one stream."""


class _Changed(Exception):
    """The file on the server is not the one the pieces so far came from."""


class _Stop(StopSignal):
    """A stop below the job's token: set by it, or by us to stop a file's parts or a plan's files.

    Setting it never sets the job's token; a part that sees it raises Cancelled,
    and whoever set it knows why.
    """

    def __init__(self, parent: CancelToken) -> None:
        super().__init__()
        self._parent = parent
        self._unhook = parent.on_cancel(self.set)

    def __call__(self) -> bool:
        return self._event.is_set() or self._parent()

    def wait(self, seconds: float) -> bool:
        """The job's token waits (it may end the wait for reasons of its own); our stop ends it too."""
        deadline, remaining = time.monotonic() + seconds, seconds
        while not self._event.is_set():
            if remaining <= 0:
                return False
            if self._parent.wait(min(remaining, 0.25)):
                return True
            remaining = deadline - time.monotonic()
        return True

    def close(self) -> None:
        self._unhook()


class _Connections:
    """The connections one job may have open at once, shared by its files and their pieces.

    Also decides, once per job, whether big files use them all. Files start on one
    connection each; when a connection moves less than FAST_CONNECTION_BPS over its
    first JUDGE_S, every file tries all of them, and they stay only if the job's rate
    over the next WEIGH_S rose by half. A slow connection may be the origin's limit per
    connection (more multiply the rate) or a busy machine's (more only cost CPU): the
    rate tells which. Judged for the whole job, not per file, because the files compete
    for the same connections.
    """

    def __init__(self, count: int) -> None:
        self._slots = threading.BoundedSemaphore(count)
        self._lock = threading.Lock()
        self.held = 0
        self.moved = 0
        self.widening = "single"  # then "fast", or "trying" and then "kept" or "reverted"
        self._rate_before = 0.0
        self._tried_at = 0.0
        self._window: tuple[float, int] | None = None

    @contextlib.contextmanager
    def hold(self, cancelled: CancelToken) -> Iterator[None]:
        while not self._slots.acquire(timeout=0.1):
            if cancelled():
                raise Cancelled()
        with self._lock:
            self.held += 1
        try:
            yield
        finally:
            with self._lock:
                self.held -= 1
            self._slots.release()

    @property
    def wide(self) -> bool:
        return self.widening in ("trying", "kept")

    @property
    def long_runs(self) -> bool:
        """A connection proved fast, or more did not pay: connections ask for runs of pieces."""
        return self.widening in ("fast", "reverted")

    def count(self, nbytes: int) -> None:
        with self._lock:
            self.moved += nbytes

    def judge(self, rate: float) -> None:
        """A connection's rate over its first moments; a slow one has every connection tried."""
        with self._lock:
            if self.widening != "single":
                return
            if rate >= FAST_CONNECTION_BPS:
                self.widening = "fast"
            else:
                self.widening = "trying"
                self._rate_before = rate * max(1, self.held)
                self._tried_at = time.monotonic()

    def weigh(self) -> None:
        """Keep all connections if the job's rate rose by half with them, else go back to one per file."""
        with self._lock:
            now = time.monotonic()
            if self.widening != "trying" or now - self._tried_at < JUDGE_S:
                return
            if self._window is None:
                self._window = (now, self.moved)  # the new connections have started: measure from here
                return
            since, moved = self._window
            if now - since >= WEIGH_S:
                rate = (self.moved - moved) / (now - since)
                self.widening = "kept" if rate >= 1.5 * self._rate_before else "reverted"


def _part_count(size: int) -> int:
    """How many connections a file of ``size`` bytes gets: one below RBEE_PART_MIN_BYTES."""
    if size < max(2, settings.RBEE_PART_MIN_BYTES):
        return 1
    return min(settings.RBEE_CONNECTIONS, -(-size // _piece_size(size)))


def _piece_size(size: int) -> int:
    """Pieces are taken in file order, so the hashed prefix follows close behind the transfer."""
    return max(PIECE_MIN, settings.RBEE_PART_MIN_BYTES // 4, -(-size // MAX_PIECES))


class _Piece:
    """Bytes [start, end) of the file, of which [start, pos) are written."""

    __slots__ = ("end", "pos", "start", "taken")

    def __init__(self, start: int, end: int, pos: int) -> None:
        self.start, self.end, self.pos = start, end, pos
        self.taken = pos >= end


class _PartedFile:
    """One file fetched as pieces over several connections, resumable piece by piece.

    The partial file has its full size from the start (sparse); each piece is
    written with ``os.pwrite`` at its offset from a fixed 1 MiB buffer per
    connection. Which bytes are written is kept in ``<file>.parts`` (JSON: the
    validators and each piece's start, end and written offset), replaced
    atomically every SAVE_S and at every stop, and only ever behind the writes,
    so a kill -9 loses at most what was in the buffers. Connections take the
    pieces in file order, so the written prefix grows steadily and this thread
    hashes it as it grows, reading back from the page cache: the digest is ready
    when the last byte lands, with no second pass over the file.
    """

    def __init__(
        self,
        url: str,
        path: Path,
        *,
        label: str,
        size: int,
        sha256: str | None,
        progress: Progress,
        cancelled: CancelToken,
        headers: Mapping[str, str],
        trusted: bool,
        verify: Verify | None,
        refuse_html: bool,
        slots: _Connections,
    ) -> None:
        self.url, self.path, self.label, self.size, self.sha256 = url, path, label, size, sha256
        self.progress, self.cancelled, self.headers, self.trusted = progress, cancelled, headers, trusted
        self.verify, self.refuse_html, self.slots = verify, refuse_html, slots
        self.state_path = path.with_name(path.name + PARTS_SUFFIX)
        self.lock = threading.Lock()
        self.pieces: list[_Piece] = []
        self.etag: str | None = None
        self.last_modified: str | None = None
        self.done = 0
        self.failure: BaseException | None = None
        self.retry_told = 0.0
        self.fd = -1
        self.workers: list[threading.Thread] = []
        self.active = 0
        self.stop = _Stop(cancelled)
        self.progressed = threading.Event()

    def run(self) -> str:
        """Fetch, hash and verify the file; its sha256. Same promises as ``download``."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        failed_once, changes, told_resume = False, 0, False
        while True:
            if self.cancelled():
                raise Cancelled()
            self._load()
            if self.done and not told_resume:
                self.progress.resumed(self.label, self.done)
            told_resume = True
            try:
                hexdigest = self._round()
            except _Changed as exc:
                self._discard()
                changes += 1
                if changes > MAX_CHANGES:
                    raise DownloadError(f"{self.label}: the file keeps changing on the server") from None
                self.progress.restarted(self.label, f"{exc}; starting the file again")
                continue
            except _RangeIgnored:
                self._discard()
                raise
            problem = None
            if self.sha256 and hexdigest != self.sha256.lower():
                problem = f"sha256 is {hexdigest}, expected {self.sha256.lower()}"
            elif self.verify is not None:
                problem = self.verify(self.path)
            if problem is None:
                self._discard(keep_file=True)  # nothing but the file may be moved into the catalog
                return hexdigest
            self._discard()
            if failed_once:
                raise VerificationError(f"{self.label}: {problem} (again after a fresh download)")
            failed_once = True
            self.progress.restarted(
                self.label, f"verification failed ({problem}); downloading it again from scratch"
            )

    # -- state on disk ------------------------------------------------------------------

    def _load(self) -> None:
        """The pieces as the last run left them; a partial without state is a written prefix."""
        self.etag = self.last_modified = None
        pieces = None
        try:
            state = json.loads(self.state_path.read_text())
            pieces = [_Piece(int(a), int(b), int(c)) for a, b, c in state["pieces"]]
            ends = [p.start for p in pieces[1:]] + [self.size]
            whole = self.path.stat().st_size == self.size and state["size"] == self.size
            if not whole or pieces[0].start != 0 or any(
                not p.start <= p.pos <= p.end or p.end != end for p, end in zip(pieces, ends, strict=True)
            ):
                raise ValueError("pieces do not cover the file")
            self.etag, self.last_modified = state.get("etag"), state.get("last_modified")
        except FileNotFoundError:
            prefix = self.path.stat().st_size if self.path.exists() else 0
            if prefix > self.size:
                self.path.unlink()
                prefix = 0
            pieces = self._split(prefix)
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            self._discard()
            pieces = self._split(0)
        self.pieces = pieces
        self.done = sum(p.pos - p.start for p in pieces)

    def _split(self, prefix: int) -> list[_Piece]:
        pieces = [_Piece(0, prefix, prefix)] if prefix else []
        step = _piece_size(self.size)
        pieces += [_Piece(start, min(self.size, start + step), start) for start in range(prefix, self.size, step)]
        return pieces

    def _save(self) -> None:
        with self.lock:
            state = {
                "size": self.size,
                "etag": self.etag,
                "last_modified": self.last_modified,
                "pieces": [[p.start, p.end, p.pos] for p in self.pieces],
            }
        scratch = self.state_path.with_name(self.state_path.name + ".tmp")
        try:
            scratch.write_text(json.dumps(state, separators=(",", ":")))
            os.replace(scratch, self.state_path)
        except OSError as exc:
            raise _disk_error(exc, self.label) from None

    def _discard(self, *, keep_file: bool = False) -> None:
        if not keep_file:
            self.path.unlink(missing_ok=True)
        self.state_path.unlink(missing_ok=True)
        self.state_path.with_name(self.state_path.name + ".tmp").unlink(missing_ok=True)

    # -- one round: every piece fetched once, hashed as the prefix grows ----------------

    def _round(self) -> str:
        self._save()  # before the file is grown, so a grown file always has its state
        self.failure = None
        self.stop = _Stop(self.cancelled)
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise _disk_error(exc, self.label) from None
        self.workers = []
        self.active = 0
        try:
            if os.fstat(self.fd).st_size != self.size:
                os.ftruncate(self.fd, self.size)
            self._grow()
            hexdigest = self._hash_while_fetching()
        except OSError as exc:
            self._fail(_disk_error(exc, self.label))
            hexdigest = ""
        finally:
            if self.failure is not None:
                self.stop.set()
            joined = 0
            while batch := self.workers[joined:]:  # a worker may have added another meanwhile
                for worker in batch:
                    worker.join()
                joined += len(batch)
            self.stop.close()
            os.close(self.fd)
            self._save()
        if self.failure is not None:
            raise self.failure
        if self.cancelled():
            raise Cancelled()
        return hexdigest

    def _wanted(self) -> int:
        return _part_count(self.size) if self.slots.wide else 1

    def _grow(self) -> None:
        """As many connections as the job's widening allows, as far as pieces are left to take."""
        started = []
        with self.lock:
            untaken = sum(not p.taken for p in self.pieces)
            for _ in range(0 if self.stop() else min(self._wanted() - self.active, untaken)):
                worker = threading.Thread(target=self._work, name=f"part-{len(self.workers)}", daemon=True)
                self.workers.append(worker)
                self.active += 1
                started.append(worker)
        for worker in started:
            worker.start()

    def _fail(self, exc: BaseException) -> None:
        with self.lock:
            if self.failure is None:
                self.failure = exc
        self.stop.set()
        self.progressed.set()

    def _prefix(self) -> int:
        for piece in self.pieces:
            if piece.pos < piece.end:
                return piece.pos
        return self.size

    def _hash_while_fetching(self) -> str:
        hasher = hashlib.sha256()
        memory = mmap.mmap(-1, HASH_BLOCK)
        block = memoryview(memory)
        try:
            return self._hash_into(hasher, block)
        finally:
            block.release()
            memory.close()

    def _hash_into(self, hasher: hashlib._Hash, block: memoryview) -> str:
        hashed = 0
        saved_at = time.monotonic()
        while not self.stop():
            self.progressed.clear()
            self.slots.weigh()
            if self.slots.wide:
                self._grow()
            prefix = self._prefix()
            while hashed < prefix and not self.stop():
                n = os.preadv(self.fd, [block[: min(HASH_BLOCK, prefix - hashed)]], hashed)
                if n <= 0:
                    raise DownloadError(f"{self.label}: the partial file is shorter than its pieces say")
                hasher.update(block[:n])
                hashed += n
            if hashed == self.size:
                return hasher.hexdigest()
            if time.monotonic() - saved_at >= SAVE_S:
                self._save()
                saved_at = time.monotonic()
            self.progressed.wait(0.2)
        return ""

    def _take(self) -> list[_Piece] | None:
        """The next pieces nobody has taken, in file order: one, or a run once a connection proved fast.

        A fast connection asking for 8 MiB at a time would spend a good part of its
        time on requests (the Hub's redirect, then the CDN); a run of pieces is one
        request, still written and resumed piece by piece.
        """
        with self.lock:
            if self.active > self._wanted():
                return None  # the extra connections did not pay: this one ends
            for i, piece in enumerate(self.pieces):
                if not piece.taken:
                    piece.taken = True
                    run, length = [piece], piece.end - piece.pos
                    for following in self.pieces[i + 1 :] if self.slots.long_runs else ():
                        if following.taken or following.pos != following.start or length >= RUN_BYTES:
                            break
                        following.taken = True
                        run.append(following)
                        length += following.end - following.start
                    return run
        return None

    def _work(self) -> None:
        """One connection's worth of work: the next piece in file order, until none is left."""
        # Mapped, not malloc'd: a short-lived thread's 1 MiB would stay in its malloc arena
        # after it ends, and the server's memory would creep up download after download.
        memory = mmap.mmap(-1, WRITE_BLOCK)
        buffer = memoryview(memory)
        try:
            while (run := self._take()) is not None:
                self._fetch_run(run, buffer)
        except BaseException as exc:
            self._fail(exc)
        finally:
            with self.lock:
                self.active -= 1
            buffer.release()
            with contextlib.suppress(BufferError):  # a slice still held by a traceback: unmapped with it
                memory.close()

    def _fetch_run(self, run: list[_Piece], buffer: memoryview) -> None:
        """Consecutive pieces in one request; a retry asks for what is left of them."""
        attempts = 0
        while run[-1].pos < run[-1].end:
            if self.stop():
                raise Cancelled()
            before = sum(p.pos for p in run)
            try:
                with self.slots.hold(self.stop):
                    self._request(run, buffer)
            except _Retry as exc:
                if self.stop():
                    raise Cancelled() from None
                attempts = 1 if sum(p.pos for p in run) > before else attempts + 1
                if attempts >= settings.RBEE_DOWNLOAD_ATTEMPTS:
                    raise NetworkError(
                        f"{self.label}: giving up after {attempts} attempts without progress: {exc.reason}"
                    ) from None
                delay = exc.retry_after
                if delay is None:
                    delay = min(60.0, settings.RBEE_RETRY_BACKOFF * 2 ** (attempts - 1))
                self._tell_retry(exc.reason, attempts, delay)
                if self.stop.wait(delay):
                    raise Cancelled() from None

    def _tell_retry(self, reason: str, attempt: int, delay: float) -> None:
        with self.lock:
            now = time.monotonic()
            if now - self.retry_told < RETRY_NARRATION_S:
                return
            self.retry_told = now
        self.progress.retry(self.label, reason, attempt, delay)

    def _request(self, run: list[_Piece], buffer: memoryview) -> None:
        run = [p for p in run if p.pos < p.end]  # a cut run resumes in its first unfinished piece
        first, end = run[0].pos, run[-1].end
        wanted = {**self.headers, "Accept-Encoding": "identity", "Range": f"bytes={first}-{end - 1}"}
        with self.lock:
            validator = self.etag if self.etag and not self.etag.startswith("W/") else self.last_modified
        if validator:
            wanted["If-Range"] = validator  # a changed file answers 200, never a mix of two files
        response: Response | None = None
        try:
            response = _open("GET", self.url, wanted, trusted=self.trusted)
            unhook = self.stop.on_cancel(lambda: _abort(response))
            try:
                self._check(response, first, end)
                self._receive(response, run, buffer)
            finally:
                unhook()
        except NetworkError as exc:
            if self.stop():
                raise Cancelled() from None
            raise _Retry(str(exc)) from None
        except TimeoutError:
            raise _Retry(f"no data for {settings.RBEE_STALL_TIMEOUT:g} s, the transfer stalled") from None
        except (OSError, http.client.HTTPException) as exc:
            if self.stop():
                raise Cancelled() from None
            raise _Retry(transport_failure(exc, response.url if response else self.url)) from None
        finally:
            if response is not None:
                response.conn.close()

    def _check(self, response: Response, first: int, end: int) -> None:
        """The answer is the asked range of the same file, or says what to do instead."""
        status, headers = response.status_code, response.headers
        if status == 429 or status >= 500:
            raise _Retry(f"server answered {status}", retry_after_seconds(headers.get("retry-after")))
        if status in (401, 403):
            detail = headers.get("x-error-message", "")[:300] if self.trusted else ""
            raise AccessDenied(f"{self.label}: the server refused access ({status}){': ' + detail if detail else ''}")
        if status == 404:
            raise NotFound(f"{self.label}: not found on the server (404)")
        if status == 416:
            raise _Changed("the file on the server is shorter than planned")
        if status not in (200, 206):
            raise DownloadError(f"{self.label}: unexpected answer {status} from the server")
        if self.refuse_html and is_html(headers.get("content-type")):
            raise DownloadError(f"{self.label}: the server answered a web page, not a file", kind="not_a_file")
        etag, modified = headers.get("etag"), headers.get("last-modified")
        with self.lock:
            known = self.etag is not None or self.last_modified is not None
            changed = known and (
                (etag != self.etag) if (etag or self.etag) else (modified != self.last_modified)
            )
            if not known:
                self.etag, self.last_modified = etag, modified
        if changed:
            raise _Changed("the file changed on the server during the download")
        if status == 200:
            raise _RangeIgnored()
        match = _CONTENT_RANGE.match(headers.get("content-range", ""))
        if match and match[3] != "*" and int(match[3]) != self.size:
            raise _Changed(f"the file on the server is now {match[3]} bytes, the plan said {self.size}")
        if not match or int(match[1]) != first or int(match[2]) >= end:
            raise _Retry("server answered a different range than asked", 0)

    def _receive(self, response: Response, run: list[_Piece], buffer: memoryview) -> None:
        """The body into the run's pieces in turn, each written at its offset from the one buffer."""
        length = response.headers.get("content-length")
        remaining = run[-1].end - run[0].pos
        pieces = iter(run)
        piece = next(pieces)
        if length is not None:
            if not length.isdigit():
                raise _Retry(f"the server sent an invalid Content-Length ({_host_port(response.url)})")
            remaining = min(remaining, int(length))
        fp = response.resp.fp if length is not None and not response.resp.chunked else None
        resp = response.resp
        fill, flushed_at = 0, time.monotonic()
        began, received, judged = flushed_at, 0, False

        def flush() -> None:
            nonlocal fill, flushed_at
            if not fill:
                return
            view = buffer[:fill]
            offset = piece.pos
            try:
                while view:
                    written = os.pwrite(self.fd, view, offset)
                    view, offset = view[written:], offset + written
            except OSError as exc:
                raise _disk_error(exc, self.label) from None
            with self.lock:
                piece.pos += fill
                self.done += fill
                done = self.done
            self.slots.count(fill)
            fill, flushed_at = 0, time.monotonic()
            self.progressed.set()
            self.progress.advance(self.label, done)  # may block briefly: a bandwidth cap acts here

        try:
            while remaining > 0:
                if piece.pos + fill == piece.end:
                    flush()
                    piece = next(pieces)
                room = buffer[fill : fill + min(WRITE_BLOCK - fill, remaining, piece.end - piece.pos - fill)]
                n = fp.readinto1(room) if fp is not None else resp.readinto(room)
                if not n:
                    break
                fill += n
                remaining -= n
                received += n
                if self.stop():
                    raise Cancelled()
                if not judged and (time.monotonic() - began >= JUDGE_S or not remaining):
                    judged = True
                    self.slots.judge(received / max(time.monotonic() - began, 1e-6))
                    if self.slots.wide:
                        self._grow()
                if fill == WRITE_BLOCK or piece.pos + fill == piece.end or time.monotonic() - flushed_at >= FLUSH_S:
                    flush()
        finally:
            flush()  # bytes received are kept for a resume
        if remaining > 0:
            raise _Retry(f"connection closed after {piece.pos - piece.start} of {piece.end - piece.start} bytes of a part")


def _disk_error(exc: OSError, label: str) -> DownloadError:
    """A failed write is not a network fault: never retried."""
    if exc.errno == errno.ENOSPC:
        return DiskFull(f"{label}: the disk is full ({exc.strerror})")
    return DownloadError(f"{label}: cannot write {exc.filename or 'the file'}: {exc.strerror}")


def is_html(content_type: str | None) -> bool:
    return (content_type or "").split(";", 1)[0].strip().lower() in ("text/html", "application/xhtml+xml")


def _abort(response: Response) -> None:
    """Cut the socket under a blocked read so a cancel takes effect at once."""
    sock = response.conn.sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

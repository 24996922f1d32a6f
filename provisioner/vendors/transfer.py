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
import email.utils
import errno
import hashlib
import http.client
import ipaddress
import logging
import os
import re
import socket
import ssl
import time
import urllib.request
from collections.abc import Callable, Mapping
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
    """Download one planned file into ``dest`` at its (checked) relative path; its sha256.

    ``headers`` go with every request (Authorization is dropped on a redirect to
    another origin); ``trusted`` only for configured endpoints; ``verify`` is the
    vendor's own check of a finished file, failed the way a sha256 mismatch is;
    ``refuse_html`` for sources where a web page means "not the file you asked for".
    """
    digest = download(
        planned.url,
        inside(dest, planned.path),
        label=planned.path,
        size=planned.size,
        sha256=planned.sha256,
        progress=progress,
        cancelled=cancelled,
        headers=headers or {},
        trusted=trusted,
        verify=verify,
        refuse_html=refuse_html,
    )
    progress.file_done(planned.path, planned.size, digest)
    return digest


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

"""A static file HTTP server that can misbehave on purpose.

Download code has to survive dropped connections, servers that ignore ``Range``,
rate limiting, stalls and corrupted bytes. Real CDNs only do these things at
random, so tests need a server that does them on demand and deterministically.
:class:`FaultServer` serves named files from disk and applies a :class:`Fault`
per file; every request is logged so tests can assert on what the client did
(e.g. "the second GET resumed with ``Range: bytes=1000-``").

The request handling machinery (:class:`ServerBase`, :class:`FileHandlerBase`)
is shared with the fake Hub in :mod:`tests.servers.fakehub`, so Hub-served
files get the same Range handling and fault injection.

Large files are never loaded into memory: clean responses go out with
``sendfile``; responses that need faults or throttling are streamed in 64 KiB
chunks read from disk.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import itertools
import re
import select
import socket
import socketserver
import sys
import tempfile
import threading
import time
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

__all__ = [
    "CHUNK_SIZE",
    "Fault",
    "FaultServer",
    "FileEntry",
    "FileHandlerBase",
    "RequestRecord",
    "ServerBase",
    "sha256_file",
]

#: Body chunk size whenever a response cannot use sendfile.
CHUNK_SIZE = 64 * 1024
#: Largest block handed to one sendfile call, so the stop flag is checked now and then.
_SENDFILE_BLOCK = 16 * 1024 * 1024
#: Granularity of waits that must react to ``stop()`` or a client disconnect.
_POLL_SECONDS = 0.05

_RANGE_RE = re.compile(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", re.IGNORECASE)

StatusSpec = int | tuple[int, dict[str, str]]


@dataclass
class Fault:
    """How the server should misbehave for one file. Every field is optional.

    Precedence for a GET: a queued status wins, then a stall, then a drop.
    ``flip_byte_at``, ``ignore_range``, ``throttle_bps`` and
    ``content_disposition`` combine with anything that sends a body.
    HEAD requests never consume any counter or queued status.
    """

    #: Send the headers and this many body bytes, then close the socket.
    drop_after: int | None = None
    #: How many GETs the drop applies to; afterwards the file is served normally.
    drop_times: int = 1
    #: Answer 200 with the full body even when a Range is requested (no Accept-Ranges header).
    ignore_range: bool = False
    #: Error responses to answer before serving normally, one popped per GET,
    #: e.g. ``[500, (429, {"Retry-After": "1"})]``.
    statuses: list[StatusSpec] = field(default_factory=list)
    #: Send the headers, then send nothing for this many seconds, then close.
    stall_after_headers: float | None = None
    #: How many GETs the stall applies to.
    stall_times: int = 1
    #: Serve the content with the byte at this absolute offset XOR 0xFF.
    flip_byte_at: int | None = None
    #: How many GETs (that include the offset) get the flipped byte; None means every one.
    flip_times: int | None = None
    #: Rate-limit the body to this many bytes per second (stops promptly on disconnect/stop).
    throttle_bps: int | None = None
    #: Value of an extra Content-Disposition header.
    content_disposition: str | None = None


@dataclass
class RequestRecord:
    """One request as the server saw it.

    Records are appended when a request arrives and updated while it is
    served, so tests can watch in-flight downloads (``status`` is None until
    the status line is sent, ``done`` turns True when the handler finished).
    """

    method: str
    #: Decoded URL path without the query string, e.g. ``/models/a.bin``.
    path: str
    #: The raw ``Range`` request header, or None.
    range: str | None
    status: int | None = None
    bytes_sent: int = 0
    query: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    #: Set by the fake Hub for resolve/tree requests.
    repo_id: str | None = None
    #: Set by the fake Hub for resolve requests: the file path inside the repo.
    file: str | None = None
    done: bool = False
    #: ``time.monotonic()`` when the request arrived; orders records across servers.
    started: float = field(default_factory=time.monotonic)

    @property
    def name(self) -> str:
        """The path without its leading slash: the name used by ``FaultServer.add_file``."""
        return self.path[1:] if self.path.startswith("/") else self.path

    def header(self, name: str) -> str | None:
        """A request header, looked up case-insensitively (clients differ in casing)."""
        wanted = name.lower()
        return next((value for key, value in self.headers.items() if key.lower() == wanted), None)

    @property
    def authorization(self) -> str | None:
        """The Authorization header sent with the request, if any (e.g. to prove a token stayed on the hub)."""
        return self.header("Authorization")


@dataclass(frozen=True)
class FileEntry:
    """A file that can be served: where its bytes are and how to describe them."""

    path: Path
    size: int
    #: Full ETag header value, quotes included.
    etag: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _Plan:
    """What to do for one request, decided atomically from the file's Fault."""

    status: int
    start: int
    end: int
    error: tuple[int, dict[str, str]] | None = None
    stall: float | None = None
    drop_after: int | None = None
    flip_at: int | None = None
    ignore_range: bool = False
    throttle_bps: int | None = None
    content_disposition: str | None = None

    @property
    def plain(self) -> bool:
        """True when the body can go out untouched with sendfile."""
        return self.stall is None and self.drop_after is None and self.flip_at is None and not self.throttle_bps


class _RangeNotSatisfiable(Exception):
    """The Range header is valid but starts beyond the end of the file (HTTP 416)."""


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """Return the inclusive ``(start, end)`` of a single-range header.

    Returns None when the header should be ignored (malformed or multi-range,
    which RFC 9110 allows a server to answer with 200), and raises
    :class:`_RangeNotSatisfiable` for a range beyond the end of the file.
    """
    match = _RANGE_RE.fullmatch(header)
    if match is None:
        return None
    first, last = match.groups()
    if first == "" and last == "":
        return None
    if first == "":  # suffix range: the last N bytes
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise _RangeNotSatisfiable
        return max(0, size - suffix), size - 1
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= size:
        raise _RangeNotSatisfiable
    end = int(last) if last else size - 1
    return start, min(end, size - 1)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks so big files never sit in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def _quote_etag(etag: str) -> str:
    """Accept either a bare hash or a ready header value."""
    return etag if etag.startswith(('"', 'W/"')) else f'"{etag}"'


def _normalize_status(spec: StatusSpec) -> tuple[int, dict[str, str]]:
    if isinstance(spec, tuple):
        code, headers = spec
        return int(code), dict(headers)
    return int(spec), {}


class ServerBase(http.server.ThreadingHTTPServer):
    """Threaded HTTP/1.1 server on 127.0.0.1 that starts and stops cleanly.

    Binding happens in ``__init__`` so ``url`` is known before ``start()``.
    ``stop()`` must never hang a test run, even while a handler is stuck in a
    throttled or stalled response: it sets ``stopping`` (which every wait in
    the handlers watches), shuts down all open client sockets, stops the accept
    loop and closes the listening socket. Handler threads are daemons and are
    not joined.
    """

    daemon_threads = True
    block_on_close = False
    request_queue_size = 128
    protocol_version = "HTTP/1.1"
    handler_class: type[http.server.BaseHTTPRequestHandler]

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, verbose: bool = False) -> None:
        self.verbose = verbose
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._records: list[RequestRecord] = []
        self._faults: dict[Hashable, Fault] = {}
        self._connections: set[socket.socket] = set()
        self._thread: threading.Thread | None = None
        self._stopped = False
        super().__init__((host, port), self.handler_class)

    def server_bind(self) -> None:
        """Bind without HTTPServer's reverse DNS lookup (slow or hanging without a network)."""
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    @property
    def url(self) -> str:
        """Base URL without a trailing slash, e.g. ``http://127.0.0.1:43121``."""
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> ServerBase:
        """Serve in a daemon thread. Idempotent; returns self for chaining."""
        if self._stopped:
            raise RuntimeError("a stopped server cannot be restarted; create a new one")
        if self._thread is None:
            self._thread = threading.Thread(
                target=self.serve_forever,
                kwargs={"poll_interval": _POLL_SECONDS},
                name=f"{type(self).__name__}:{self.port}",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and abort in-flight responses. Idempotent and quick."""
        if self._stopped:
            return
        self._stopped = True
        self.stopping.set()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self.shutdown()  # returns within one poll interval
            self._thread.join(timeout=2)
        self.server_close()

    @property
    def running(self) -> bool:
        return self._thread is not None and not self._stopped

    def __enter__(self) -> ServerBase:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet about clients that hang up; print real bugs."""
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError) or self.stopping.is_set():
            return
        super().handle_error(request, client_address)

    # -- bookkeeping used by handlers -----------------------------------------

    def _register(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections.add(conn)
        if self.stopping.is_set():
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _unregister(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections.discard(conn)

    def _log(self, record: RequestRecord) -> None:
        with self._lock:
            self._records.append(record)

    @property
    def requests(self) -> list[RequestRecord]:
        """Snapshot of every request received so far, oldest first."""
        with self._lock:
            return list(self._records)

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until every logged request has finished; True if that happened in time.

        A client can have read a whole response before the handler thread has
        updated ``bytes_sent``/``done``, so call this before asserting on them.
        """
        deadline = time.monotonic() + timeout
        while any(not r.done for r in self.requests):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
        return True

    def clear_requests(self) -> None:
        with self._lock:
            self._records.clear()

    # -- faults -----------------------------------------------------------------

    def _store_fault(self, key: Hashable, fault: Fault | None, fields: dict[str, Any]) -> None:
        """Store a private copy: counters and the status queue are consumed as requests arrive."""
        if fault is None:
            fault = Fault(**fields)
        elif fields:
            fault = dataclasses.replace(fault, **fields)
        fault = dataclasses.replace(fault, statuses=list(fault.statuses))
        with self._lock:
            self._faults[key] = fault

    def _drop_faults(self, key: Hashable | None) -> None:
        with self._lock:
            if key is None:
                self._faults.clear()
            else:
                self._faults.pop(key, None)

    def _current_fault(self, key: Hashable) -> Fault | None:
        with self._lock:
            fault = self._faults.get(key)
            return None if fault is None else dataclasses.replace(fault, statuses=list(fault.statuses))

    def _plan(self, key: Hashable, method: str, range_header: str | None, size: int) -> _Plan:
        """Decide how to answer one request and consume fault counters, under the lock."""
        with self._lock:
            fault = self._faults.get(key)
            plan = _Plan(status=200, start=0, end=size - 1)
            if fault is not None:
                plan.ignore_range = fault.ignore_range
                plan.throttle_bps = fault.throttle_bps
                plan.content_disposition = fault.content_disposition
            if range_header is not None and not plan.ignore_range:
                try:
                    span = parse_range(range_header, size)
                except _RangeNotSatisfiable:
                    plan.status = 416
                else:
                    if span is not None:
                        plan.status = 206
                        plan.start, plan.end = span
            if fault is None or method != "GET":
                return plan
            if fault.statuses:
                plan.error = _normalize_status(fault.statuses.pop(0))
                return plan
            if plan.status == 416:
                return plan
            if fault.stall_after_headers is not None and fault.stall_times > 0:
                fault.stall_times -= 1
                plan.stall = fault.stall_after_headers
                return plan
            if fault.drop_after is not None and fault.drop_times > 0:
                fault.drop_times -= 1
                plan.drop_after = fault.drop_after
            if (
                fault.flip_byte_at is not None
                and (fault.flip_times is None or fault.flip_times > 0)
                and plan.start <= fault.flip_byte_at <= plan.end
            ):
                if fault.flip_times is not None:
                    fault.flip_times -= 1
                plan.flip_at = fault.flip_byte_at
            return plan


class FileHandlerBase(http.server.BaseHTTPRequestHandler):
    """Request handler with logging, GET/HEAD dispatch and fault-aware file serving.

    Subclasses implement :meth:`route`.
    """

    protocol_version = "HTTP/1.1"
    #: Idle keep-alive connections and stuck writes give up after this long.
    timeout = 60
    server: ServerBase
    record: RequestRecord

    def setup(self) -> None:
        super().setup()
        self.server._register(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server._unregister(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            super().log_message(format, *args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def _refuse(self) -> None:
        """Other methods may carry a body we do not read, so answer 405 and close."""
        self.close_connection = True
        self._dispatch("REFUSED")

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse

    def _dispatch(self, method: str) -> None:
        parts = urlsplit(self.path)
        self.record = RequestRecord(
            method=self.command,
            path=unquote(parts.path),
            range=self.headers.get("Range"),
            query=parts.query,
            headers=dict(self.headers.items()),
        )
        self.server._log(self.record)
        try:
            if method == "REFUSED":
                self.send_simple(405, b"method not allowed\n", headers={"Allow": "GET, HEAD"})
            else:
                self.route(method, parts.path, parts.query)
        except OSError:
            self.close_connection = True
        finally:
            self.record.done = True

    def route(self, method: str, raw_path: str, query: str) -> None:
        """Answer one GET or HEAD. ``raw_path`` is still percent-encoded."""
        raise NotImplementedError

    # -- response helpers ---------------------------------------------------------

    def start_response(self, status: int, headers: dict[str, str]) -> None:
        """Send the status line and headers, and note the status in the log."""
        self.record.status = status
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()

    def send_simple(
        self,
        status: int,
        body: bytes = b"",
        *,
        headers: dict[str, str] | None = None,
        content_type: str = "text/plain; charset=utf-8",
    ) -> None:
        """A complete small response (errors, JSON, redirects); HEAD gets the headers only."""
        all_headers = {"Content-Type": content_type, "Content-Length": str(len(body))}
        all_headers.update(headers or {})
        self.start_response(status, all_headers)
        if self.command != "HEAD" and body:
            self.wfile.write(body)
            self.record.bytes_sent = len(body)

    def abort(self) -> None:
        """Close the connection now, mid-response if need be."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def client_gone(self) -> bool:
        """True when the client closed its side (or the server shut the socket down)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            if not readable:
                return False
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def serve_file(
        self,
        method: str,
        entry: FileEntry,
        fault_key: Hashable,
        extra_headers: dict[str, str] | None = None,
    ) -> None:
        """Serve ``entry`` honouring Range, HEAD and whatever Fault is set under ``fault_key``."""
        plan = self.server._plan(fault_key, method, self.headers.get("Range"), entry.size)
        if plan.error is not None:
            code, error_headers = plan.error
            reason = self.responses.get(code, ("Error",))[0]
            self.send_simple(code, f"{code} {reason}\n".encode(), headers=error_headers)
            return
        if plan.status == 416:
            self.send_simple(416, b"", headers={"Content-Range": f"bytes */{entry.size}"})
            return

        length = max(0, plan.end - plan.start + 1)
        headers = {"Content-Type": "application/octet-stream", "ETag": entry.etag}
        if not plan.ignore_range:
            headers["Accept-Ranges"] = "bytes"
        headers.update(entry.headers)
        headers.update(extra_headers or {})
        if plan.content_disposition is not None:
            headers["Content-Disposition"] = plan.content_disposition
        if plan.status == 206:
            headers["Content-Range"] = f"bytes {plan.start}-{plan.end}/{entry.size}"
        headers["Content-Length"] = str(length)
        self.start_response(plan.status, headers)
        if method == "HEAD":
            return
        try:
            if plan.stall is not None:
                self._stall(plan.stall)
            elif plan.plain:
                self._send_with_sendfile(entry.path, plan.start, length)
            else:
                self._send_in_chunks(entry.path, plan.start, length, plan)
        except OSError:  # client went away, or stop() shut the socket
            self.close_connection = True

    def _stall(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            if self.server.stopping.wait(min(_POLL_SECONDS, remaining)) or self.client_gone():
                break
        self.abort()

    def _send_with_sendfile(self, path: Path, start: int, length: int) -> None:
        offset, remaining = start, length
        with open(path, "rb") as f:
            while remaining > 0:
                if self.server.stopping.is_set():
                    self.abort()
                    return
                sent = self.connection.sendfile(f, offset, min(remaining, _SENDFILE_BLOCK))
                if sent <= 0:  # file shrank under us: never send a short body silently
                    self.abort()
                    return
                offset += sent
                remaining -= sent
                self.record.bytes_sent += sent

    def _send_in_chunks(self, path: Path, start: int, length: int, plan: _Plan) -> None:
        limit = length if plan.drop_after is None else min(length, plan.drop_after)
        bps = plan.throttle_bps or 0
        # ~20 chunks per second when throttled, so pacing is smooth and a
        # disconnect or stop() is noticed within about 50 ms.
        chunk_size = max(1, min(CHUNK_SIZE, bps // 20)) if bps else CHUNK_SIZE
        stopping = self.server.stopping
        began = time.monotonic()
        sent = 0
        with open(path, "rb") as f:
            f.seek(start)
            while sent < limit:
                if stopping.is_set() or (bps and self.client_gone()):
                    self.abort()
                    return
                data = f.read(min(chunk_size, limit - sent))
                if not data:
                    self.abort()
                    return
                pos = start + sent
                if plan.flip_at is not None and pos <= plan.flip_at < pos + len(data):
                    flipped = bytearray(data)
                    flipped[plan.flip_at - pos] ^= 0xFF
                    data = bytes(flipped)
                self.connection.sendall(data)
                sent += len(data)
                self.record.bytes_sent = sent
                if bps:
                    delay = began + sent / bps - time.monotonic()
                    if delay > 0 and stopping.wait(delay):
                        self.abort()
                        return
        if plan.drop_after is not None:
            self.abort()


class _FaultHandler(FileHandlerBase):
    server: FaultServer

    def route(self, method: str, raw_path: str, query: str) -> None:
        name = unquote(raw_path)[1:]
        entry = self.server._entry(name)
        if entry is None:
            self.send_simple(404, b"not found\n")
            return
        self.serve_file(method, entry, name)


class FaultServer(ServerBase):
    """Serve named files, misbehaving per file as configured with :meth:`set_fault`.

    Usage::

        with FaultServer() as fs:
            fs.add_file("models/a.bin", b"...")
            fs.set_fault("models/a.bin", drop_after=1000)
            url = fs.url_for("models/a.bin")
            ...
            assert [r.range for r in fs.gets("models/a.bin")] == [None, "bytes=1000-"]

    The query string is ignored when matching names, like a CDN serving signed URLs.
    """

    handler_class = _FaultHandler

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, verbose: bool = False) -> None:
        self._files: dict[str, FileEntry] = {}
        self._tmpdir = tempfile.TemporaryDirectory(prefix="faultserver-", ignore_cleanup_errors=True)
        self._counter = itertools.count()
        super().__init__(host, port, verbose=verbose)

    def add_file(
        self,
        name: str,
        data: bytes | Path,
        *,
        etag: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Serve ``data`` at ``/<name>``.

        Bytes are written to a temp dir owned by the server so every file is
        served from disk; a Path is served in place (never copied or read whole).
        ``etag`` overrides the default ``"<sha256>"`` (pass it when the hash is
        already known to avoid re-reading a big file); ``headers`` are added to
        every response for this file.
        """
        name = name.lstrip("/")
        if isinstance(data, (bytes, bytearray, memoryview)):
            payload = bytes(data)
            path = Path(self._tmpdir.name) / f"{next(self._counter)}.bin"
            path.write_bytes(payload)
            digest = etag or hashlib.sha256(payload).hexdigest()
        else:
            path = Path(data)
            if not path.is_file():
                raise FileNotFoundError(path)
            digest = etag or sha256_file(path)
        entry = FileEntry(path=path, size=path.stat().st_size, etag=_quote_etag(digest), headers=dict(headers or {}))
        with self._lock:
            self._files[name] = entry

    def remove_file(self, name: str) -> None:
        with self._lock:
            self._files.pop(name, None)
            self._faults.pop(name, None)

    def _entry(self, name: str) -> FileEntry | None:
        with self._lock:
            return self._files.get(name)

    def url_for(self, name: str) -> str:
        """Absolute URL of a file added with :meth:`add_file`."""
        return f"{self.url}/{quote(name.lstrip('/'))}"

    def set_fault(self, name: str, fault: Fault | None = None, **fields: Any) -> None:
        """Replace the fault of ``name``: ``set_fault(name, drop_after=10)`` or ``set_fault(name, Fault(...))``."""
        name = name.lstrip("/")
        with self._lock:
            if name not in self._files:
                raise KeyError(f"no file named {name!r}")
        self._store_fault(name, fault, fields)

    def clear_faults(self, name: str | None = None) -> None:
        """Serve ``name`` (or every file when None) normally again."""
        self._drop_faults(None if name is None else name.lstrip("/"))

    def get_fault(self, name: str) -> Fault | None:
        """A copy of the fault with its counters as consumed so far."""
        return self._current_fault(name.lstrip("/"))

    def gets(self, name: str) -> list[RequestRecord]:
        """GET requests for ``name``, oldest first."""
        name = name.lstrip("/")
        return [r for r in self.requests if r.method == "GET" and r.name == name]

    def stop(self) -> None:
        super().stop()
        self._tmpdir.cleanup()

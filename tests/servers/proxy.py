"""A small forward proxy on 127.0.0.1: CONNECT tunnels and absolute-form requests.

Enough to prove that downloads honour HTTP(S)_PROXY the way admins behind a
corporate proxy need: it relays bytes and logs what it was asked.
"""

from __future__ import annotations

import select
import socket
import socketserver
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass
class ProxyRequest:
    method: str
    target: str
    proxy_authorization: str | None


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.request.recv(65536)
            if not chunk:
                return
            head += chunk
        header_block, _, rest = head.partition(b"\r\n\r\n")
        lines = header_block.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ", 2)
        headers = [line for line in lines[1:] if line]
        auth = next((h.split(":", 1)[1].strip() for h in headers if h.lower().startswith("proxy-authorization:")), None)
        self.server.log(ProxyRequest(method, target, auth))
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            upstream = socket.create_connection((host, int(port)), timeout=10)
            self.request.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:
            parts = urlsplit(target)
            upstream = socket.create_connection((parts.hostname, parts.port or 80), timeout=10)
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            kept = [h for h in headers if not h.lower().startswith(("proxy-", "connection:"))]
            request = "\r\n".join([f"{method} {path} {version}", *kept, "Connection: close", "", ""])
            upstream.sendall(request.encode("latin-1") + rest)
        self._pipe(upstream)

    def _pipe(self, upstream: socket.socket) -> None:
        sockets = [self.request, upstream]
        try:
            while not self.server.stopping.is_set():
                readable, _, _ = select.select(sockets, [], [], 0.2)
                for sock in readable:
                    data = sock.recv(1024 * 1024)
                    if not data:
                        return
                    (upstream if sock is self.request else self.request).sendall(data)
        except OSError:
            return
        finally:
            upstream.close()


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.stopping = threading.Event()
        self.requests: list[ProxyRequest] = []
        self._lock = threading.Lock()

    def log(self, request: ProxyRequest) -> None:
        with self._lock:
            self.requests.append(request)


class ForwardProxy:
    def __init__(self) -> None:
        self._server = _Server()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def requests(self) -> list[ProxyRequest]:
        return list(self._server.requests)

    def __enter__(self) -> ForwardProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stopping.set()
        self._server.shutdown()
        self._server.server_close()

"""A raw TCP service on 127.0.0.1 for the tests of what may be connected to: it counts
the connections it is offered and, given a banner, greets each with it (as a database
or an SSH server would) before hanging up."""

from __future__ import annotations

import socket
import threading


class RawService:
    def __init__(self, banner: bytes = b"") -> None:
        self.banner = banner
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            try:
                if self.banner:
                    conn.sendall(self.banner)
                    conn.recv(65536)  # the request, unread
            except OSError:
                pass
            finally:
                conn.close()

    def __enter__(self) -> RawService:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()

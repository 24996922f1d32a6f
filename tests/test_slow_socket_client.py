"""A websocket client that never reads is dropped, not buffered for forever: the real
server pings an idle socket and closes it when no pong comes back. The production
command uses daphne's defaults (ping after 20 s, close 30 s later); this test shortens
them so it ends in seconds."""

from __future__ import annotations

import socket
import time

import pytest

from tests.live import LiveDashboard, RawWebSocket

pytestmark = pytest.mark.slow


def test_a_client_that_never_reads_is_dropped(tmp_path):
    live = LiveDashboard(tmp_path / "data", daphne_args=("--ping-interval", "1", "--ping-timeout", "2"))
    live.setup().start()
    try:
        client = live.client()
        cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
        silent = RawWebSocket(f"ws://127.0.0.1:{live.port}/ws/jobs/", {"Origin": live.url, "Cookie": cookie})
        silent.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)

        time.sleep(6)  # never reading: no pong goes back

        silent.sock.settimeout(5)
        hung_up = False
        try:
            while silent.sock.recv(65536):  # what was sent before the close, then EOF
                pass
            hung_up = True
        except ConnectionResetError:
            hung_up = True  # closed with our unread bytes still queued: a reset
        except TimeoutError:
            hung_up = False  # still open, still holding what it could not send
        silent.close()
        assert hung_up, "the server kept a socket that never reads"
        assert client.get("/healthz").status_code == 200  # and serves everyone else
    finally:
        live.stop()

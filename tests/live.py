"""The real dashboard in a subprocess: daphne on 127.0.0.1, its own data dir.

Used where only a real process proves the point: the browser test, a SIGKILL in
the middle of a download, the benchmark.
"""

from __future__ import annotations

import base64
import hashlib
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

ROOT = Path(__file__).resolve().parent.parent
ADMIN_PASSWORD = "live-admin-password"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_serving(
    process: subprocess.Popen[bytes], url: str, timeout: float, name: str, log: Callable[[], str]
) -> None:
    """Poll ``url`` until it answers 200; fail with the process's log if it exits or never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}:\n{log()}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{name} did not start in {timeout} s:\n{log()}")


class LiveDashboard:
    def __init__(
        self,
        data_dir: Path,
        env: dict[str, str] | None = None,
        port: int | None = None,
        daphne_args: tuple[str, ...] = (),
    ) -> None:
        self.data_dir = Path(data_dir)
        self.daphne_args = daphne_args
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.data_dir / "server.log"
        base = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("RBEE_", "HF_", "DATABASE_URL", "REDIS_URL", "DJANGO_"))
        }
        self.env = {
            **base,
            "DJANGO_SETTINGS_MODULE": "rbee.settings",
            "RBEE_DATA_DIR": str(self.data_dir),
            "RBEE_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "RBEE_DISK_RESERVE": "0",
            "PORT": str(self.port),
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HOME": str(self.data_dir / "hf-home"),
            **(env or {}),
        }

    def manage(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            check=check,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def setup(self) -> LiveDashboard:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.manage("migrate", "--noinput")
        self.manage("ensure_admin")
        return self

    def start(self, timeout: float = 30.0) -> LiveDashboard:
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port), *self.daphne_args, "rbee.asgi:application"],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_until_serving(self.process, f"{self.url}/accounts/login/", timeout, "dashboard", self.log)
        return self

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            self.process.wait(timeout=15)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.kill(signal.SIGTERM)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def client(self) -> httpx.Client:
        """An httpx client logged in as admin, sending the CSRF token on writes."""
        client = httpx.Client(base_url=self.url, timeout=15, follow_redirects=False)
        client.get("/accounts/login/")
        csrf = client.cookies["csrftoken"]
        response = client.post(
            "/accounts/login/",
            data={"username": "admin", "password": ADMIN_PASSWORD, "csrfmiddlewaretoken": csrf},
            headers={"Referer": f"{self.url}/accounts/login/"},
        )
        if response.status_code != 302:
            raise RuntimeError(f"login failed: {response.status_code}")
        client.headers["X-CSRFToken"] = client.cookies["csrftoken"]
        client.headers["Referer"] = f"{self.url}/"
        return client

    def wait_for_job(self, client: httpx.Client, job_id: int, states: tuple[str, ...], timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        job: dict[str, Any] = {}
        while time.monotonic() < deadline:
            job = client.get(f"/api/jobs/{job_id}/").json()
            if job["state"] in states:
                return job
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} still {job.get('state')} after {timeout} s:\n{self.log()[-3000:]}")

    def __enter__(self) -> LiveDashboard:
        return self.setup().start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RawWebSocket:
    """Just enough RFC 6455 to read what the dashboard pushes, as a browser would."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
        self.buffer = b""
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {parts.path}{'?' + parts.query if parts.query else ''} HTTP/1.1",
            f"Host: {parts.netloc}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            *(f"{name}: {value}" for name, value in headers.items()),
        ]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status:
            raise ConnectionError(f"handshake refused: {status!r}")
        accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
        assert accept in head

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("socket closed")
        self.buffer += chunk

    def _take(self, n: int) -> bytes:
        while len(self.buffer) < n:
            self._fill()
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def receive(self, timeout: float) -> str | None:
        """The next text message, or None when nothing came within ``timeout``."""
        message = b""
        while True:
            if not self.buffer:
                self.sock.settimeout(timeout)
                try:
                    self._fill()
                except TimeoutError:
                    return None
                finally:
                    self.sock.settimeout(10)
            first, second = self._take(2)
            length = second & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", self._take(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", self._take(8))
            payload = self._take(length)
            opcode = first & 0x0F
            if opcode == 0x8:
                raise ConnectionError(f"closed by the server: {payload!r}")
            if opcode in (0x9, 0xA):
                continue  # pings do not matter for a test this short
            message += payload
            if first & 0x80:
                return message.decode()

    def close(self) -> None:
        self.sock.close()

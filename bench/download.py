"""Download throughput benchmark: the dashboard against curl, aria2c and `hf download`.

Serves repos of random files from the project's fake hub, run in its own process,
and downloads them four ways, alternating round by round so that drift on the
machine hits every way alike:

  (a) dashboard  the real server (daphne, subprocess): POST /api/jobs/ -> job ->
                 Hugging Face vendor -> disk, narration on, a websocket listener
                 attached to /ws/jobs/<id>/; timed from the POST to `succeeded`
  (b) curl       `curl -s -L -o FILE URL` of the files: one connection
  (c) aria2      `aria2c -x8 -s8 -j1`: 8 connections per file, a file at a time
  (d) hf         `hf download REPO --local-dir DIR` (huggingface_hub's CLI)

Scenarios: `loopback` (2 × 512 MiB, unthrottled: the raw transfer limit, memory),
`throttled` (2 × 256 MiB, the origin sends 20 MB/s per connection, as CDNs do),
and `cap` (a 10 MB/s hive limit set with PATCH /api/hives/local/, on the throttled
origin). It prints MB/s (1 MB = 10^6 bytes) per way, the dashboard's ratios to
each, the server's peak RSS growth, progress events per second per job, and
PASS/FAIL against the targets. It is a report: it exits 0 whatever the figures
(1 only if the benchmark itself could not run).

    make bench                                  # every scenario, full size (~6 min)
    .venv/bin/python bench/download.py --size-mib 32 --throttled-size-mib 32 --rounds 1   # quick check

See bench/README.md for what the figures mean and what was measured.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from tests.live import LiveDashboard, free_port, wait_until_serving  # noqa: E402

REPO_ID = "bench/two-files"
FILE_NAMES = ("a.safetensors", "b.safetensors")
MIB = 1024 * 1024
MB = 1_000_000

# Targets from issues 3 and 9.
TARGET_RATIO_CURL = 0.8  # unthrottled loopback
TARGET_RATIO_ARIA2 = 0.8  # per-connection throttled origin
TARGET_RATIO_HF = 4.0  # per-connection throttled origin
CAP_BPS = 10_000_000  # the cap scenario's hive limit
CAP_TARGET_MBPS = (9.0, 11.0)
CAP_SIZE_MIB = 32
TARGET_RSS_GROWTH = 64 * MIB
TARGET_EVENTS_PER_S = 10.0

# The end time comes from the server's finished_at, so polling can be slow and light.
POLL_S = 0.2
RSS_SAMPLE_S = 0.05


# -- results ---------------------------------------------------------------------------------------


@dataclass
class Run:
    way: str
    round: int
    seconds: float | None = None
    nbytes: int = 0
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    cpu_s: float | None = None
    warmup: bool = False

    @property
    def name(self) -> str:
        return "warm-up" if self.warmup else f"round {self.round}"

    @property
    def mbps(self) -> float | None:
        if self.error or not self.seconds:
            return None
        return self.nbytes / self.seconds / MB


def process_cpu_s(pid: int) -> float | None:
    """user + system CPU seconds a process has used so far (all its threads)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- test data --------------------------------------------------------------------------------------


@dataclass
class RepoSpec:
    """A repo of the fake hub: files of random bytes, each ``size`` bytes, and their sha256."""

    repo_id: str
    directory: Path
    size: int
    names: tuple[str, ...] = FILE_NAMES
    expected: dict[str, str] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.size * len(self.names)


def make_repo(spec: RepoSpec) -> None:
    """Write the repo's files once and note their sha256."""
    spec.directory.mkdir(parents=True)
    block = 4 * MIB
    for name in spec.names:
        hasher = hashlib.sha256()
        with open(spec.directory / name, "wb") as f:
            left = spec.size
            while left:
                chunk = os.urandom(min(block, left))
                hasher.update(chunk)
                f.write(chunk)
                left -= len(chunk)
        spec.expected[name] = hasher.hexdigest()
    os.sync()  # the write-back of these pages must not land in the first round


def sha256_of(path: Path) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(4 * MIB):
            hasher.update(chunk)
    return hasher.hexdigest()


def check_files(directory: Path, expected: dict[str, str], size: int) -> str | None:
    """None when every file is there with the right size and sha256, else what is wrong."""
    for name, digest in expected.items():
        path = directory / name
        if not path.is_file():
            return f"{name} missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, expected {size}"
        if sha256_of(path) != digest:
            return f"{name} sha256 mismatch"
    return None


def remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
    os.sync()  # no dirty pages of one run left to be written back during the next


# -- processes ---------------------------------------------------------------------------------------


def stop_process_group(proc: subprocess.Popen[bytes] | None, timeout: float = 10.0) -> None:
    """SIGTERM the group a process leads (started with start_new_session), then SIGKILL."""
    if proc is None or proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


class HubProcess:
    """tests/servers/fakehub.py in its own process, so its CPU is not the client's."""

    def __init__(self, repos: list[RepoSpec], log_path: Path, throttle_bps: int | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.repos = repos
        self.log_path = log_path
        self.throttle_bps = throttle_bps
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120.0) -> HubProcess:
        log_file = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.servers.fakehub",
                "--port",
                str(self.port),
                *[arg for repo in self.repos for arg in ("--repo", f"{repo.repo_id}={repo.directory}")],
                *(["--throttle-bps", str(self.throttle_bps)] if self.throttle_bps else []),
            ],
            cwd=ROOT,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log_file.close()
        # It hashes the files before it listens: a generous timeout.
        wait_until_serving(self.proc, f"{self.url}/api/models/{self.repos[0].repo_id}", timeout, "fake hub", self.log)
        return self

    def resolve_url(self, repo: RepoSpec, name: str) -> str:
        return f"{self.url}/{repo.repo_id}/resolve/main/{name}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        stop_process_group(self.proc)


class RssSampler(threading.Thread):
    """VmRSS of one process every 50 ms; keeps the peak since the last mark."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True, name="rss-sampler")
        self.pid = pid
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.peak = 0
        self.samples = 0

    def read(self) -> int | None:
        try:
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) * 1024
        except (OSError, ValueError):
            return None
        return None

    def mark(self) -> int:
        """Start a new peak window; returns the RSS now."""
        now = self.read() or 0
        with self.lock:
            self.peak = now
        return now

    def take_peak(self) -> int:
        with self.lock:
            return self.peak

    def run(self) -> None:
        while not self.stopping.wait(RSS_SAMPLE_S):
            rss = self.read()
            if rss is None:
                continue
            with self.lock:
                self.samples += 1
                self.peak = max(self.peak, rss)

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=2)


# -- a minimal RFC 6455 websocket client ---------------------------------------------------------------


class WebSocketListener(threading.Thread):
    """Connects to a job's websocket like the job page does and counts what it is sent.

    Written over a raw socket because the `websockets` package is not in the venv:
    handshake with the session cookie and an allowed Origin, send ``{"after": 0}``,
    then read (and answer pings) until told to stop.
    """

    GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    def __init__(self, base_url: str, path: str, cookies: dict[str, str]) -> None:
        super().__init__(daemon=True, name="ws-listener")
        host_port = base_url.split("://", 1)[1]
        self.host, port = host_port.rsplit(":", 1)
        self.port = int(port)
        self.origin = base_url
        self.path = path
        self.cookie = "; ".join(f"{k}={v}" for k, v in cookies.items())
        self.stopping = threading.Event()
        self.connected = threading.Event()
        self.messages = 0
        self.payload_bytes = 0
        self.error: str | None = None
        self.closed_by_server = False
        self._sock: socket.socket | None = None
        self._buf = bytearray()
        self._deadline: float | None = None  # set while waiting for the server's close frame

    # framing
    def _send_frame(self, opcode: int, payload: bytes) -> None:
        assert self._sock is not None
        header = bytearray([0x80 | opcode])
        length = len(payload)
        if length < 126:
            header.append(0x80 | length)
        elif length < 1 << 16:
            header.append(0x80 | 126)
            header += struct.pack("!H", length)
        else:
            header.append(0x80 | 127)
            header += struct.pack("!Q", length)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self._sock.sendall(bytes(header) + mask + masked)

    def _fill(self, n: int) -> bytes:
        """Exactly n bytes from the socket; raises EOFError, or InterruptedError on stop."""
        assert self._sock is not None
        while len(self._buf) < n:
            if self._deadline is not None:
                if time.monotonic() > self._deadline:
                    raise InterruptedError
            elif self.stopping.is_set():
                raise InterruptedError
            try:
                data = self._sock.recv(max(65536, n - len(self._buf)))
            except TimeoutError:
                continue
            if not data:
                raise EOFError
            self._buf += data
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def _read_frame(self) -> tuple[bool, int, bytes]:
        b0, b1 = self._fill(2)
        length = b1 & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", self._fill(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", self._fill(8))
        mask = self._fill(4) if b1 & 0x80 else None
        payload = self._fill(length) if length else b""
        if mask:
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        return bool(b0 & 0x80), b0 & 0x0F, payload

    def _handshake(self) -> None:
        sock = socket.create_connection((self.host, self.port), timeout=10)
        self._sock = sock
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {self.path} HTTP/1.1\r\n"
            f"Host: {self.host}:{self.port}\r\n"
            "Upgrade: websocket\r\n"
            "Connection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n"
            f"Origin: {self.origin}\r\n"
            f"Cookie: {self.cookie}\r\n"
            "\r\n"
        )
        sock.sendall(request.encode())
        while b"\r\n\r\n" not in self._buf:
            data = sock.recv(4096)
            if not data:
                raise EOFError("connection closed during the websocket handshake")
            self._buf += data
        head, _, rest = bytes(self._buf).partition(b"\r\n\r\n")
        self._buf = bytearray(rest)
        lines = head.decode("latin-1").split("\r\n")
        if " 101 " not in lines[0] + " ":
            raise ConnectionError(f"websocket handshake refused: {lines[0]}")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        expected = base64.b64encode(hashlib.sha1((key + self.GUID).encode()).digest()).decode()
        if headers.get("sec-websocket-accept") != expected:
            raise ConnectionError("websocket handshake: wrong Sec-WebSocket-Accept")
        sock.settimeout(0.2)

    def run(self) -> None:
        try:
            self._handshake()
            self._send_frame(0x1, json.dumps({"after": 0}).encode())
            self.connected.set()
            while True:
                fin, opcode, payload = self._read_frame()
                if opcode in (0x0, 0x1, 0x2):
                    self.payload_bytes += len(payload)
                    if fin:
                        self.messages += 1
                elif opcode == 0x8:
                    self.closed_by_server = True
                    try:
                        self._send_frame(0x8, payload[:2])
                    except OSError:
                        pass
                    return
                elif opcode == 0x9:
                    self._send_frame(0xA, payload)
        except InterruptedError:
            self._close()
        except Exception as exc:  # reported with the run, never raised in a thread
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.connected.set()
            if self._sock is not None:
                self._sock.close()

    def _close(self) -> None:
        try:
            self._send_frame(0x8, struct.pack("!H", 1000))
            self._deadline = time.monotonic() + 1.0
            while True:
                _, opcode, payload = self._read_frame()
                if opcode in (0x0, 0x1, 0x2):
                    self.payload_bytes += len(payload)
                elif opcode == 0x8:
                    break
        except (OSError, EOFError, InterruptedError, ValueError):
            pass

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=5)


# -- the three ways ---------------------------------------------------------------------------------


class DashboardWay:
    """(a): one long-running server; a new job per round, its entry deleted afterwards."""

    def __init__(self, data_dir: Path, hub: HubProcess, env: dict[str, str] | None = None) -> None:
        self.live = LiveDashboard(data_dir, env={"HF_ENDPOINT": hub.url, **(env or {})})
        self.client: httpx.Client | None = None
        self.sampler: RssSampler | None = None
        self.rss_baseline: int | None = None
        self.rss_peak = 0

    def start(self) -> None:
        self.live.setup().start()
        self.client = self.live.client()
        assert self.live.process is not None
        # Warm-up: every page and API view the benchmark touches, loaded once.
        for path in ("/models/", "/jobs/", "/jobs/new/", "/api/models/", "/api/jobs/"):
            self.client.get(path)
        self.sampler = RssSampler(self.live.process.pid)
        self.sampler.start()

    def stop(self) -> None:
        if self.sampler is not None:
            self.sampler.stop()
        if self.client is not None:
            self.client.close()
        try:
            self.live.stop()
        except Exception:
            self.live.kill()

    def run(self, round_no: int, repo: RepoSpec) -> Run:
        assert self.client is not None and self.sampler is not None
        client = self.client
        run = Run("dashboard", round_no, nbytes=repo.total)
        rss_before = self.sampler.mark()
        if self.rss_baseline is None:
            self.rss_baseline = rss_before
        listener: WebSocketListener | None = None
        entry_id: int | None = None
        pid = self.live.process.pid  # type: ignore[union-attr]
        cpu0 = process_cpu_s(pid)
        t0_wall, t0 = time.time(), time.perf_counter()
        try:
            response = client.post("/api/jobs/", json={"model": repo.repo_id})
            if response.status_code not in (200, 201):
                raise RuntimeError(f"POST /api/jobs/ answered {response.status_code}: {response.text[:300]}")
            job = response.json()["jobs"][0]
            job_id = job["id"]
            listener = WebSocketListener(self.live.url, f"/ws/jobs/{job_id}/", dict(client.cookies.items()))
            listener.start()
            deadline = time.monotonic() + 600
            while job["state"] not in ("succeeded", "failed", "cancelled"):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"job {job_id} still {job['state']} after 600 s")
                time.sleep(POLL_S)
                job = client.get(f"/api/jobs/{job_id}/").json()
            observed = time.perf_counter() - t0
            cpu1 = process_cpu_s(pid)
            if cpu0 is not None and cpu1 is not None:
                run.cpu_s = cpu1 - cpu0
            listener.stop()
            run.seconds = observed
            if job.get("finished_at"):
                # The server's own clock for the end: no polling granularity in the figure.
                server_s = datetime.fromisoformat(job["finished_at"]).timestamp() - t0_wall
                if 0 < server_s <= observed + 0.01:
                    run.seconds = server_s
            peak = self.sampler.take_peak()
            self.rss_peak = max(self.rss_peak, peak)
            run.extra.update(
                job=job_id,
                rss_before=rss_before,
                rss_peak=peak,
                rss_after=self.sampler.read() or 0,
                ws_messages=listener.messages,
                ws_bytes=listener.payload_bytes,
                ws_error=listener.error,
            )
            entry_id = job.get("entry_id")
            if job["state"] != "succeeded":
                raise RuntimeError(f"job {job_id} {job['state']}: {job.get('error')}")
            actions = self._actions(job_id)
            if "model_download_complete" not in actions:
                # e.g. model_download_exists: an entry left over, nothing was downloaded
                raise RuntimeError(f"job {job_id} succeeded without downloading: {sorted(set(actions))}")
            progress = actions.count("model_download_progress")
            run.extra.update(progress_events=progress, events=len(actions))
            run.extra["progress_per_s"] = progress / run.seconds
            problem = self._check_entry(entry_id, repo)
            if problem:
                raise RuntimeError(problem)
            if listener.error:
                raise RuntimeError(f"websocket listener: {listener.error}")
            if listener.messages == 0:
                raise RuntimeError("the websocket listener received nothing")
        except Exception as exc:
            run.error = f"{type(exc).__name__}: {exc}"
            if listener is not None:
                listener.stop()
        if entry_id is not None:  # whatever happened: the next round must download again
            try:
                self._delete_entry(entry_id)
            except Exception as exc:
                run.error = run.error or f"{type(exc).__name__}: {exc}"
        return run

    def _actions(self, job_id: int) -> list[str]:
        """Every event's action, in order, through all pages of the events API."""
        assert self.client is not None
        after, actions = 0, []
        while True:
            page = self.client.get(f"/api/jobs/{job_id}/events/", params={"after": after}).json()
            actions += [event["action"] for event in page["events"]]
            after = page["last_seq"]
            if not page["more"]:
                return actions

    def _check_entry(self, entry_id: int | None, repo: RepoSpec) -> str | None:
        assert self.client is not None
        if entry_id is None:
            return "the job succeeded without a catalog entry"
        entry = self.client.get(f"/api/models/{entry_id}/").json()
        files = {f["path"]: f for f in entry.get("files", [])}
        for name, digest in repo.expected.items():
            found = files.get(name)
            if found is None:
                return f"catalog entry {entry_id} lacks {name}"
            if found["sha256"] != digest:
                return f"catalog entry {entry_id}: {name} sha256 {found['sha256']}, expected {digest}"
            if found["size_bytes"] != repo.size:
                return f"catalog entry {entry_id}: {name} size {found['size_bytes']}, expected {repo.size}"
            on_disk = Path(entry["path"]) / name
            if not on_disk.is_file() or on_disk.stat().st_size != repo.size:
                return f"{on_disk} is not on disk with {repo.size} bytes"
        return None

    def _delete_entry(self, entry_id: int) -> None:
        assert self.client is not None
        response = self.client.post(f"/models/{entry_id}/delete/")
        if response.status_code not in (302, 303):
            raise RuntimeError(f"deleting entry {entry_id} answered {response.status_code}")
        if self.client.get(f"/api/models/{entry_id}/").status_code != 404:
            raise RuntimeError(f"entry {entry_id} still there after delete")
        os.sync()


def _timed(run: Run, command: list[str], out_dir: Path, repo: RepoSpec, env: dict[str, str] | None = None) -> None:
    name = Path(command[0]).name
    cpu0, t0 = children_cpu_s(), time.perf_counter()
    result = subprocess.run(command, capture_output=True, env=env, timeout=900)
    run.seconds = time.perf_counter() - t0
    run.cpu_s = children_cpu_s() - cpu0
    if result.returncode != 0:
        output = (result.stderr or result.stdout).decode(errors="replace")[-300:]
        raise RuntimeError(f"{name} exited {result.returncode}: {output}")
    if problem := check_files(out_dir, repo.expected, repo.size):
        raise RuntimeError(problem)


def run_curl(hub: HubProcess, repo: RepoSpec, out_dir: Path, round_no: int) -> Run:
    """(b): one curl process fetching the files one after the other, one connection."""
    run = Run("curl", round_no, nbytes=repo.total)
    out_dir.mkdir(parents=True)
    command = ["curl", "-s", "-f", "-L"]
    for name in repo.names:
        command += ["-o", str(out_dir / name), hub.resolve_url(repo, name)]
    try:
        _timed(run, command, out_dir, repo)
    except Exception as exc:
        run.error = f"{type(exc).__name__}: {exc}"
    finally:
        remove(out_dir)
    return run


def run_aria2(hub: HubProcess, repo: RepoSpec, out_dir: Path, round_no: int) -> Run:
    """(c): aria2c -x8 -s8, one file at a time (-j1): 8 connections, the dashboard's budget."""
    run = Run("aria2", round_no, nbytes=repo.total)
    out_dir.mkdir(parents=True)
    inputs = out_dir / "uris.txt"
    inputs.write_text("".join(f"{hub.resolve_url(repo, name)}\n  out={name}\n" for name in repo.names))
    command = ["aria2c", "-x8", "-s8", "-j1", "-q", "--allow-overwrite=true", "-d", str(out_dir), "-i", str(inputs)]
    try:
        _timed(run, command, out_dir, repo)
    except Exception as exc:
        run.error = f"{type(exc).__name__}: {exc}"
    finally:
        remove(out_dir)
    return run


def run_hf(hub: HubProcess, repo: RepoSpec, out_dir: Path, hf_home: Path, round_no: int) -> Run:
    """(d): huggingface_hub's CLI, xet off, a fresh HF_HOME."""
    run = Run("hf", round_no, nbytes=repo.total)
    hf = Path(sys.executable).parent / "hf"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("HF_")},
        "HF_ENDPOINT": hub.url,
        "HF_HUB_DISABLE_XET": "1",
        "HF_HOME": str(hf_home),
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }
    try:
        _timed(run, [str(hf), "download", repo.repo_id, "--local-dir", str(out_dir)], out_dir, repo, env)
    except Exception as exc:
        run.error = f"{type(exc).__name__}: {exc}"
    finally:
        remove(out_dir)
        remove(hf_home)
    return run


# -- report -------------------------------------------------------------------------------------------


def fmt_mbps(value: float | None) -> str:
    return "  error" if value is None else f"{value:7.1f}"


def median_mbps(runs: list[Run]) -> float | None:
    values = [r.mbps for r in runs if r.mbps is not None]
    return statistics.median(values) if values else None


def verdict(ok: bool | None) -> str:
    return "n/a " if ok is None else ("PASS" if ok else "FAIL")


LABELS = {
    "dashboard": "(a) dashboard",
    "curl": "(b) curl",
    "aria2": "(c) aria2c -x8",
    "hf": "(d) hf download",
}


@dataclass
class Scenario:
    """One origin (a fake hub process, throttled or not) and the ways compared on it."""

    name: str
    repo: RepoSpec
    throttle_bps: int | None
    ways: tuple[str, ...]
    warmup: int
    hub: HubProcess | None = None
    dashboard: DashboardWay | None = None
    runs: list[Run] = field(default_factory=list)
    cap: str | None = None


def report(args: argparse.Namespace, scenario: Scenario) -> None:
    repo, runs, dashboard = scenario.repo, scenario.runs, scenario.dashboard
    by_way = {way: [r for r in runs if r.way == way and not r.warmup] for way in scenario.ways}
    out = print
    out("")
    out("=" * 78)
    origin = (
        f"throttled to {scenario.throttle_bps / MB:g} MB/s per connection" if scenario.throttle_bps else "unthrottled"
    )
    out(
        f"scenario {scenario.name}: {repo.repo_id}, {len(repo.names)} × {repo.size // MIB} MiB = "
        f"{repo.total / MB:.0f} MB, origin {origin}"
    )
    out(
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, {platform.system()} {platform.release()}; "
        f"{args.rounds} round(s) alternating {','.join(scenario.ways)} after {scenario.warmup} uncounted warm-up "
        "round(s); MB = 10^6 bytes"
    )
    out(
        f"load average at start {args.load_start:.2f}, now {os.getloadavg()[0]:.2f} "
        "(busy neighbours lower MB/s far more than they change client CPU)"
    )
    out("=" * 78)
    out(f"{'way':<18}{'median MB/s':>12}{'client CPU':>12}   runs (MB/s, in order)")
    for way in scenario.ways:
        values = [fmt_mbps(r.mbps).strip() for r in by_way[way]]
        cpus = [r.cpu_s / (r.nbytes / 1e9) for r in by_way[way] if r.cpu_s is not None and not r.error]
        cpu = f"{statistics.median(cpus):6.2f} s/GB" if cpus else "         -"
        out(f"{LABELS[way]:<18}{fmt_mbps(median_mbps(by_way[way])):>12}{cpu:>12}   {', '.join(values) or '-'}")
    warm = [r for r in runs if r.warmup]
    if warm:
        out("warm-up, not counted: " + ", ".join(f"{LABELS[r.way]} {fmt_mbps(r.mbps).strip()}" for r in warm))
    out("client CPU = user+sys seconds per GB of the downloading process: daphne (all threads), curl, aria2c, hf")
    errors = [r for r in runs if r.error]
    for r in errors:
        out(f"  ! {LABELS[r.way]} {r.name}: {r.error}")

    medians = {way: median_mbps(by_way[way]) for way in scenario.ways}
    a = medians["dashboard"]
    ratios = {way: (a / m if a and m else None) for way, m in medians.items() if way != "dashboard"}
    out("")
    for way, ratio in ratios.items():
        out(f"dashboard / {LABELS[way][4:]:<14}: {'n/a' if ratio is None else f'{ratio:.2f}'}")

    rss_growth = None
    events_per_s: list[float] = []
    dashboard_runs = [r for r in runs if r.way == "dashboard"]  # warm-up included: RSS and events count it too
    if dashboard is not None and dashboard_runs:
        out("")
        out("dashboard runs:")
        for r in dashboard_runs:
            x = r.extra
            if "rss_before" in x:
                out(
                    f"  {r.name}: job {x.get('job')}, {r.seconds or 0:.2f} s, "
                    f"RSS {x['rss_before'] / MIB:.1f} -> peak {x['rss_peak'] / MIB:.1f} -> {x['rss_after'] / MIB:.1f} MiB, "
                    f"{x.get('progress_events', '?')} progress events of {x.get('events', '?')} "
                    f"({x.get('progress_per_s', 0):.1f}/s), websocket {x.get('ws_messages')} messages "
                    f"({x.get('ws_bytes', 0) / 1024:.0f} KiB)"
                )
            if "progress_per_s" in x:
                events_per_s.append(x["progress_per_s"])
        if dashboard.rss_baseline is not None:
            rss_growth = dashboard.rss_peak - dashboard.rss_baseline
            out(
                f"server RSS before first download {dashboard.rss_baseline / MIB:.1f} MiB, "
                f"peak {dashboard.rss_peak / MIB:.1f} MiB: growth {rss_growth / MIB:.1f} MiB "
                f"({dashboard.sampler.samples if dashboard.sampler else 0} samples at {RSS_SAMPLE_S * 1000:.0f} ms)"
            )
        if events_per_s:
            out(
                f"progress events per second per job: max {max(events_per_s):.1f}, median {statistics.median(events_per_s):.1f}"
            )
            if any((r.seconds or 0) < 2 for r in dashboard_runs):
                out("  (a job under 2 s: its first and its final progress event alone make the rate look high)")
    if scenario.cap:
        out("")
        out(scenario.cap)

    out("")
    out("targets:")
    targets = (
        [("aria2", TARGET_RATIO_ARIA2), ("hf", TARGET_RATIO_HF)] if scenario.throttle_bps else [("curl", TARGET_RATIO_CURL)]
    )
    for way, target in targets:
        ratio = ratios.get(way)
        out(
            f"  {verdict(None if ratio is None else ratio >= target)}  (a) >= {target:g} x {LABELS[way][4:]}"
            f"{'' if ratio is None else f'  ({ratio:.2f} x: {a:.0f} vs {medians[way]:.0f} MB/s)'}"
        )
    out(
        f"  {verdict(None if rss_growth is None else rss_growth < TARGET_RSS_GROWTH)}  server RSS growth < 64 MiB"
        f"{'' if rss_growth is None else f'  ({rss_growth / MIB:.1f} MiB over {len(dashboard_runs)} downloads of {repo.total / MIB:.0f} MiB)'}"
    )
    max_eps = max(events_per_s) if events_per_s else None
    out(
        f"  {verdict(None if max_eps is None else max_eps <= TARGET_EVENTS_PER_S)}  <= {TARGET_EVENTS_PER_S:g} progress events/s per job"
        f"{'' if max_eps is None else f'  (max {max_eps:.1f}/s)'}"
    )
    if errors:
        out(f"  FAIL  {len(errors)} run(s) did not complete (see above)")
    out("=" * 78)


def run_cap(scenario: Scenario, repo: RepoSpec) -> str:
    """PATCH the local hive's bandwidth cap, download a small repo under it, report the rate."""
    dashboard = scenario.dashboard
    assert dashboard is not None and dashboard.client is not None
    client = dashboard.client
    response = client.patch("/api/hives/local/", json={"max_bytes_per_s": CAP_BPS})
    if response.status_code in (404, 405):
        return "cap scenario: not available (no hive PATCH)"
    if response.status_code != 200:
        return f"cap scenario: PATCH /api/hives/local/ answered {response.status_code}: {response.text[:200]}"
    try:
        run = dashboard.run(1, repo)
    finally:
        client.patch("/api/hives/local/", json={"max_bytes_per_s": None})
    if run.error or run.mbps is None:
        return f"cap scenario: the capped download failed: {run.error}"
    low, high = CAP_TARGET_MBPS
    ok = low <= run.mbps <= high
    return (
        f"cap scenario: max_bytes_per_s {CAP_BPS / MB:g} MB/s, {repo.total / MB:.0f} MB in {run.seconds:.2f} s = "
        f"{run.mbps:.1f} MB/s: {verdict(ok)} (target {low:g}–{high:g} MB/s)"
    )


# -- main ---------------------------------------------------------------------------------------------


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_scenario(args: argparse.Namespace, scenario: Scenario, work: Path) -> None:
    repo = scenario.repo
    for round_no in range(1 - scenario.warmup, args.rounds + 1):
        for way in scenario.ways:
            tag = f"{scenario.name} round {round_no}" if round_no > 0 else f"{scenario.name} warm-up"
            log(f"{tag}: {way} ...")
            assert scenario.hub is not None and scenario.dashboard is not None
            if way == "dashboard":
                run = scenario.dashboard.run(round_no, repo)
            elif way == "curl":
                run = run_curl(scenario.hub, repo, work / "curl-out", round_no)
            elif way == "aria2":
                run = run_aria2(scenario.hub, repo, work / "aria2-out", round_no)
            else:
                run = run_hf(scenario.hub, repo, work / "hf-out", work / "hf-home", round_no)
            run.warmup = round_no <= 0
            scenario.runs.append(run)
            if run.error:
                log(f"{tag}: {way} FAILED: {run.error}")
            else:
                log(f"{tag}: {way} {run.seconds:.2f} s = {run.mbps:.1f} MB/s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=512, help="loopback: size of each of the two files (default 512)")
    parser.add_argument(
        "--throttled-size-mib", type=int, default=256, help="throttled: size of each of the two files (default 256)"
    )
    parser.add_argument(
        "--throttle-mbps", type=float, default=20.0, help="throttled: MB/s per connection at the origin (default 20)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="counted rounds per scenario (default 3)")
    parser.add_argument(
        "--warmup",
        type=int,
        default=1,
        help="uncounted loopback rounds first (default 1): on a VM whose memory is backed lazily by the host, the "
        "first download into never-touched page cache runs at about half speed, whatever the way",
    )
    parser.add_argument(
        "--scenarios",
        default="loopback,throttled,cap",
        help="comma-separated, of loopback, throttled, cap (default all; cap runs on the throttled origin)",
    )
    parser.add_argument(
        "--dashboard-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for the dashboard, e.g. RBEE_CONNECTIONS=4 (repeatable; to compare settings)",
    )
    parser.add_argument("--tmpdir", type=Path, default=None, help="where the temp dir goes (default: the system's)")
    args = parser.parse_args(argv)
    if any("=" not in item for item in args.dashboard_env):
        parser.error("--dashboard-env takes NAME=VALUE")
    dashboard_env = dict(item.split("=", 1) for item in args.dashboard_env)
    chosen = {name.strip() for name in args.scenarios.split(",") if name.strip()}
    if args.size_mib < 1 or args.throttled_size_mib < 1 or args.rounds < 1 or args.warmup < 0:
        parser.error("sizes and --rounds must be at least 1, --warmup at least 0")
    if not chosen or chosen - {"loopback", "throttled", "cap"}:
        parser.error("--scenarios takes loopback, throttled and cap")
    for tool in ("curl", "aria2c"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} is not installed (make deps)")
    if not (Path(sys.executable).parent / "hf").exists():
        parser.error(f"no hf CLI next to {sys.executable}")

    # Ctrl-C must work even when started in the background (which ignores SIGINT).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    args.load_start = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="rbee-bench-", dir=args.tmpdir))
    ways = ("dashboard", "curl", "aria2", "hf")
    scenarios: list[Scenario] = []
    if "loopback" in chosen:
        repo = RepoSpec(REPO_ID, work / "repo", args.size_mib * MIB)
        scenarios.append(Scenario("loopback", repo, None, ways, args.warmup))
    if chosen & {"throttled", "cap"}:
        repo = RepoSpec("bench/throttled", work / "repo-throttled", args.throttled_size_mib * MIB)
        rounds_ways = ways if "throttled" in chosen else ()
        scenarios.append(Scenario("throttled", repo, int(args.throttle_mbps * MB), rounds_ways, 0))
    cap_repo = RepoSpec("bench/cap", work / "repo-cap", CAP_SIZE_MIB * MIB)
    status = 0
    current: Scenario | None = None
    try:
        for scenario in scenarios:
            current = scenario
            repos = [scenario.repo] + ([cap_repo] if scenario.name == "throttled" and "cap" in chosen else [])
            for repo in repos:
                log(f"writing {len(repo.names)} × {repo.size // MIB} MiB of random bytes to {repo.directory}")
                make_repo(repo)
            log(f"{scenario.name}: starting the fake hub (it hashes the files first)")
            scenario.hub = HubProcess(repos, work / f"fakehub-{scenario.name}.log", scenario.throttle_bps)
            scenario.hub.start()
            log(f"fake hub at {scenario.hub.url}; starting the dashboard")
            scenario.dashboard = DashboardWay(work / f"dashboard-{scenario.name}", scenario.hub, dashboard_env)
            scenario.dashboard.start()
            log(f"dashboard at {scenario.dashboard.live.url} (pid {scenario.dashboard.live.process.pid})")  # type: ignore[union-attr]
            run_scenario(args, scenario, work)
            if len(repos) > 1:
                log("cap: PATCH /api/hives/local/ and a capped download ...")
                scenario.cap = run_cap(scenario, cap_repo)
                log(scenario.cap)
            if scenario.runs:
                report(args, scenario)
            elif scenario.cap:
                print(scenario.cap)
            scenario.dashboard.stop()
            scenario.hub.stop()
            scenario.dashboard = scenario.hub = None
            for repo in repos:
                remove(repo.directory)
    except KeyboardInterrupt:
        log("interrupted; stopping everything")
        if current is not None and current.runs:
            report(args, current)
        status = 130
    except Exception as exc:
        log(f"benchmark could not run: {type(exc).__name__}: {exc}")
        if current is not None and current.dashboard is not None:
            log("dashboard log tail:\n" + current.dashboard.live.log()[-3000:])
        if current is not None and current.hub is not None:
            log("fake hub log tail:\n" + current.hub.log()[-2000:])
        status = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip the cleanup
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for scenario in scenarios:
            if scenario.dashboard is not None:
                scenario.dashboard.stop()
            if scenario.hub is not None:
                scenario.hub.stop()
        shutil.rmtree(work, ignore_errors=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    return status


if __name__ == "__main__":
    sys.exit(main())

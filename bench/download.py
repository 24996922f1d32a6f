"""Download throughput benchmark: the dashboard against curl and `hf download`.

Serves a repo of two random files (512 MiB each by default) from the project's
fake hub, run in its own process, and downloads it three ways, alternating
round by round so that drift on the machine hits every way alike:

  (a) dashboard  the real server (daphne, subprocess): POST /api/jobs/ -> job ->
                 Hugging Face vendor -> disk, narration on, a websocket listener
                 attached to /ws/jobs/<id>/; timed from the POST to `succeeded`
  (b) curl       `curl -s -L -o FILE URL` of both files: the raw transfer limit
  (c) hf         `hf download REPO --local-dir DIR` (huggingface_hub's CLI)

It prints MB/s (1 MB = 10^6 bytes) per way, the ratios (a)/(b) and (a)/(c), the
server's peak RSS growth during (a), progress events per second per job, and
PASS/FAIL against the targets. It is a report: it exits 0 whatever the figures
(1 only if the benchmark itself could not run).

    make bench                                  # full size, 1 warm-up + 3 rounds
    .venv/bin/python bench/download.py --size-mib 32 --rounds 1   # quick check

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

# Targets from issue 3.
TARGET_RATIO_CURL = 0.8
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


def make_repo(directory: Path, size: int) -> dict[str, str]:
    """Two files of random bytes, written once; returns name -> sha256."""
    directory.mkdir(parents=True)
    digests = {}
    block = 4 * MIB
    for name in FILE_NAMES:
        hasher = hashlib.sha256()
        with open(directory / name, "wb") as f:
            left = size
            while left:
                chunk = os.urandom(min(block, left))
                hasher.update(chunk)
                f.write(chunk)
                left -= len(chunk)
        digests[name] = hasher.hexdigest()
    os.sync()  # the write-back of these pages must not land in the first round
    return digests


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

    def __init__(self, repo_dir: Path, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.repo_dir = repo_dir
        self.log_path = log_path
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
                "--repo",
                f"{REPO_ID}={self.repo_dir}",
            ],
            cwd=ROOT,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log_file.close()
        # It hashes the files before it listens: a generous timeout.
        wait_until_serving(self.proc, f"{self.url}/api/models/{REPO_ID}", timeout, "fake hub", self.log)
        return self

    def resolve_url(self, name: str) -> str:
        return f"{self.url}/{REPO_ID}/resolve/main/{name}"

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

    def __init__(self, data_dir: Path, hub: HubProcess, expected: dict[str, str], size: int) -> None:
        self.live = LiveDashboard(data_dir, env={"HF_ENDPOINT": hub.url})
        self.expected = expected
        self.size = size
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

    def run(self, round_no: int) -> Run:
        assert self.client is not None and self.sampler is not None
        client = self.client
        run = Run("dashboard", round_no, nbytes=self.size * len(FILE_NAMES))
        rss_before = self.sampler.mark()
        if self.rss_baseline is None:
            self.rss_baseline = rss_before
        listener: WebSocketListener | None = None
        entry_id: int | None = None
        pid = self.live.process.pid  # type: ignore[union-attr]
        cpu0 = process_cpu_s(pid)
        t0_wall, t0 = time.time(), time.perf_counter()
        try:
            response = client.post("/api/jobs/", json={"model": REPO_ID})
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
            problem = self._check_entry(entry_id)
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

    def _check_entry(self, entry_id: int | None) -> str | None:
        assert self.client is not None
        if entry_id is None:
            return "the job succeeded without a catalog entry"
        entry = self.client.get(f"/api/models/{entry_id}/").json()
        files = {f["path"]: f for f in entry.get("files", [])}
        for name, digest in self.expected.items():
            found = files.get(name)
            if found is None:
                return f"catalog entry {entry_id} lacks {name}"
            if found["sha256"] != digest:
                return f"catalog entry {entry_id}: {name} sha256 {found['sha256']}, expected {digest}"
            if found["size_bytes"] != self.size:
                return f"catalog entry {entry_id}: {name} size {found['size_bytes']}, expected {self.size}"
            on_disk = Path(entry["path"]) / name
            if not on_disk.is_file() or on_disk.stat().st_size != self.size:
                return f"{on_disk} is not on disk with {self.size} bytes"
        return None

    def _delete_entry(self, entry_id: int) -> None:
        assert self.client is not None
        response = self.client.post(f"/models/{entry_id}/delete/")
        if response.status_code not in (302, 303):
            raise RuntimeError(f"deleting entry {entry_id} answered {response.status_code}")
        if self.client.get(f"/api/models/{entry_id}/").status_code != 404:
            raise RuntimeError(f"entry {entry_id} still there after delete")
        os.sync()


def run_curl(hub: HubProcess, out_dir: Path, expected: dict[str, str], size: int, round_no: int) -> Run:
    """(b): one curl process fetching both files (like the other ways, one connection pool)."""
    run = Run("curl", round_no, nbytes=size * len(FILE_NAMES))
    out_dir.mkdir(parents=True)
    command = ["curl", "-s", "-f", "-L"]
    for name in FILE_NAMES:
        command += ["-o", str(out_dir / name), hub.resolve_url(name)]
    try:
        cpu0, t0 = children_cpu_s(), time.perf_counter()
        result = subprocess.run(command, capture_output=True, timeout=600)
        run.seconds = time.perf_counter() - t0
        run.cpu_s = children_cpu_s() - cpu0
        if result.returncode != 0:
            raise RuntimeError(f"curl exited {result.returncode}: {result.stderr.decode(errors='replace')[-300:]}")
        if problem := check_files(out_dir, expected, size):
            raise RuntimeError(problem)
    except Exception as exc:
        run.error = f"{type(exc).__name__}: {exc}"
    finally:
        remove(out_dir)
    return run


def run_hf(hub: HubProcess, out_dir: Path, hf_home: Path, expected: dict[str, str], size: int, round_no: int) -> Run:
    """(c): huggingface_hub's CLI, xet off, a fresh HF_HOME."""
    run = Run("hf", round_no, nbytes=size * len(FILE_NAMES))
    hf = Path(sys.executable).parent / "hf"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("HF_")},
        "HF_ENDPOINT": hub.url,
        "HF_HUB_DISABLE_XET": "1",
        "HF_HOME": str(hf_home),
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }
    try:
        cpu0, t0 = children_cpu_s(), time.perf_counter()
        result = subprocess.run(
            [str(hf), "download", REPO_ID, "--local-dir", str(out_dir)], capture_output=True, env=env, timeout=600
        )
        run.seconds = time.perf_counter() - t0
        run.cpu_s = children_cpu_s() - cpu0
        if result.returncode != 0:
            raise RuntimeError(f"hf exited {result.returncode}: {result.stderr.decode(errors='replace')[-300:]}")
        if problem := check_files(out_dir, expected, size):
            raise RuntimeError(problem)
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


def report(args: argparse.Namespace, runs: list[Run], dashboard: DashboardWay | None) -> None:
    size = args.size_mib * MIB
    total = size * len(FILE_NAMES)
    ways = ("dashboard", "curl", "hf")
    by_way = {way: [r for r in runs if r.way == way and not r.warmup] for way in ways}
    labels = {
        "dashboard": "(a) dashboard",
        "curl": "(b) curl",
        "hf": "(c) hf download",
    }
    out = print
    out("")
    out("=" * 78)
    out(f"rbee download benchmark — {REPO_ID}: {len(FILE_NAMES)} × {args.size_mib} MiB = {total / MB:.0f} MB")
    out(
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, {platform.system()} {platform.release()}; "
        f"{args.rounds} round(s) alternating a,b,c after {args.warmup} uncounted warm-up round(s); MB = 10^6 bytes"
    )
    out(
        f"load average at start {args.load_start:.2f}, at end {os.getloadavg()[0]:.2f} "
        "(busy neighbours lower MB/s far more than they change client CPU)"
    )
    out("=" * 78)
    out(f"{'way':<18}{'median MB/s':>12}{'client CPU':>12}   runs (MB/s, in order)")
    for way, label in labels.items():
        values = [fmt_mbps(r.mbps).strip() for r in by_way[way]]
        cpus = [r.cpu_s / (r.nbytes / 1e9) for r in by_way[way] if r.cpu_s is not None and not r.error]
        cpu = f"{statistics.median(cpus):6.2f} s/GB" if cpus else "         -"
        out(f"{label:<18}{fmt_mbps(median_mbps(by_way[way])):>12}{cpu:>12}   {', '.join(values) or '-'}")
    warm = [r for r in runs if r.warmup]
    if warm:
        out("warm-up, not counted: " + ", ".join(f"{labels[r.way]} {fmt_mbps(r.mbps).strip()}" for r in warm))
    out("client CPU = user+sys seconds per GB of the downloading process: daphne (all threads), curl, hf")
    errors = [r for r in runs if r.error]
    for r in errors:
        out(f"  ! {labels[r.way]} {r.name}: {r.error}")

    a, b, c = (median_mbps(by_way[w]) for w in ("dashboard", "curl", "hf"))
    ratio_b = a / b if a and b else None
    ratio_c = a / c if a and c else None
    out("")
    out(f"(a)/(b) dashboard / curl : {'n/a' if ratio_b is None else f'{ratio_b:.2f}'}")
    out(f"(a)/(c) dashboard / hf   : {'n/a' if ratio_c is None else f'{ratio_c:.2f}'}")

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

    out("")
    out("targets:")
    out(
        f"  {verdict(None if ratio_b is None else ratio_b >= TARGET_RATIO_CURL)}  (a) >= {TARGET_RATIO_CURL} x curl"
        f"{'' if ratio_b is None else f'  ({ratio_b:.2f} x: {a:.0f} vs {b:.0f} MB/s)'}"
    )
    out(
        f"  {verdict(None if rss_growth is None else rss_growth < TARGET_RSS_GROWTH)}  server RSS growth < 64 MiB"
        f"{'' if rss_growth is None else f'  ({rss_growth / MIB:.1f} MiB)'}"
    )
    max_eps = max(events_per_s) if events_per_s else None
    out(
        f"  {verdict(None if max_eps is None else max_eps <= TARGET_EVENTS_PER_S)}  <= {TARGET_EVENTS_PER_S:g} progress events/s per job"
        f"{'' if max_eps is None else f'  (max {max_eps:.1f}/s)'}"
    )
    if errors:
        out(f"  FAIL  {len(errors)} run(s) did not complete (see above)")
    out("=" * 78)


# -- main ---------------------------------------------------------------------------------------------


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=512, help="size of each of the two files (default 512)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of a,b,c (default 3)")
    parser.add_argument(
        "--warmup",
        type=int,
        default=1,
        help="uncounted rounds first (default 1): on a VM whose memory is backed lazily by the host, the "
        "first download into never-touched page cache runs at about half speed, whatever the way",
    )
    parser.add_argument("--tmpdir", type=Path, default=None, help="where the temp dir goes (default: the system's)")
    args = parser.parse_args(argv)
    if args.size_mib < 1 or args.rounds < 1 or args.warmup < 0:
        parser.error("--size-mib and --rounds must be at least 1, --warmup at least 0")
    if shutil.which("curl") is None:
        parser.error("curl is not installed")
    if not (Path(sys.executable).parent / "hf").exists():
        parser.error(f"no hf CLI next to {sys.executable}")

    # Ctrl-C must work even when started in the background (which ignores SIGINT).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    args.load_start = os.getloadavg()[0]
    size = args.size_mib * MIB
    work = Path(tempfile.mkdtemp(prefix="rbee-bench-", dir=args.tmpdir))
    hub: HubProcess | None = None
    dashboard: DashboardWay | None = None
    runs: list[Run] = []
    status = 0
    try:
        log(f"writing {len(FILE_NAMES)} × {args.size_mib} MiB of random bytes to {work / 'repo'}")
        expected = make_repo(work / "repo", size)
        log("starting the fake hub (it hashes the files first)")
        hub = HubProcess(work / "repo", work / "fakehub.log")
        hub.start()
        log(f"fake hub at {hub.url}; starting the dashboard")
        dashboard = DashboardWay(work / "dashboard", hub, expected, size)
        dashboard.start()
        log(f"dashboard at {dashboard.live.url} (pid {dashboard.live.process.pid})")  # type: ignore[union-attr]
        for round_no in range(1 - args.warmup, args.rounds + 1):
            for way in ("dashboard", "curl", "hf"):
                tag = f"round {round_no}" if round_no > 0 else "warm-up"
                log(f"{tag}: {way} ...")
                if way == "dashboard":
                    run = dashboard.run(round_no)
                elif way == "curl":
                    run = run_curl(hub, work / "curl-out", expected, size, round_no)
                else:
                    run = run_hf(hub, work / "hf-out", work / "hf-home", expected, size, round_no)
                run.warmup = round_no <= 0
                runs.append(run)
                if run.error:
                    log(f"{tag}: {way} FAILED: {run.error}")
                else:
                    log(f"{tag}: {way} {run.seconds:.2f} s = {run.mbps:.1f} MB/s")
        report(args, runs, dashboard)
    except KeyboardInterrupt:
        log("interrupted; stopping everything")
        if runs:
            report(args, runs, dashboard)
        status = 130
    except Exception as exc:
        log(f"benchmark could not run: {type(exc).__name__}: {exc}")
        if dashboard is not None:
            log("dashboard log tail:\n" + dashboard.live.log()[-3000:])
        if hub is not None:
            log("fake hub log tail:\n" + hub.log()[-2000:])
        status = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip the cleanup
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if dashboard is not None:
            dashboard.stop()
        if hub is not None:
            hub.stop()
        shutil.rmtree(work, ignore_errors=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    return status


if __name__ == "__main__":
    sys.exit(main())

"""The scaled deployment for real: PostgreSQL, Redis, one web process, a worker per hive.

Every run gets its own PostgreSQL database and Redis key prefix. The dashboard runs
in daphne, and `manage.py hive_worker` runs for hives alpha and beta, each with its
own models dir, all in subprocesses with the environment a deployment would give
them. These tests skip only when PostgreSQL or Redis cannot be reached (at
127.0.0.1, or RBEE_TEST_POSTGRES / RBEE_TEST_REDIS).
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import blob, files_below, sha256
from tests.live import ROOT, LiveDashboard, RawWebSocket
from tests.servers.fakehub import FakeHub

pytestmark = [pytest.mark.scaled, pytest.mark.slow]

POSTGRES = os.environ.get("RBEE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
REDIS = os.environ.get("RBEE_TEST_REDIS", "redis://127.0.0.1:6379/0")
HEARTBEAT_S = 1.0


def _unreachable() -> str | None:
    """Why the scaled tests cannot run here, or None when both services answer."""
    import psycopg
    import redis

    try:
        psycopg.connect(f"{POSTGRES}/postgres", connect_timeout=3).close()
    except psycopg.Error as exc:
        return f"PostgreSQL at {POSTGRES} is unreachable: {exc}"
    try:
        redis.Redis.from_url(REDIS, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        return f"Redis at {REDIS} is unreachable: {exc}"
    return None


def tear_down(cluster: Cluster, database: str, prefix: str) -> None:
    """Stop the workers (gracefully; killed if they hang), the web process and the hub,
    then drop the run's database and Redis keys."""
    import psycopg
    import redis

    for hive in list(cluster.workers):
        try:
            cluster.signal_worker(hive, signal.SIGTERM)
        except subprocess.TimeoutExpired:
            pass  # killed instead
    cluster.dashboard.stop()
    cluster.hub.stop()
    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    keys = redis.Redis.from_url(REDIS)
    for key in keys.scan_iter(match=f"{prefix}*"):
        keys.delete(key)


@dataclass
class Cluster:
    """The web process and the hive workers of one scaled deployment."""

    dashboard: LiveDashboard
    hub: FakeHub
    database: str
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def models_dir(self, hive: str) -> Path:
        return self.dashboard.data_dir / f"{hive}-models"

    def worker_log(self, hive: str) -> Path:
        return self.dashboard.data_dir / f"worker-{hive}.log"

    def start_worker(
        self, hive: str, timeout: float = 30, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """`manage.py hive_worker` for the hive, back once it consumes the queue."""
        log_path = self.worker_log(hive)
        offset = log_path.stat().st_size if log_path.exists() else 0
        env = {**self.dashboard.env, "RBEE_MODELS_DIR": str(self.models_dir(hive)), **(env or {})}
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "manage.py", "hive_worker", "--hive", hive, "--interval", "0.2"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.workers[hive] = process
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"worker {hive} exited with {process.returncode}:\n{self.log(hive)}")
            with open(log_path, "rb") as log:
                log.seek(offset)
                if b"Starting worker" in log.read():
                    return process
            time.sleep(0.05)
        raise RuntimeError(f"worker {hive} did not start in {timeout} s:\n{self.log(hive)}")

    def signal_worker(self, hive: str, sig: int) -> int:
        """Send the worker a signal and return its exit status (negative: killed by it)."""
        process = self.workers.pop(hive)
        if process.poll() is None:
            os.killpg(process.pid, sig)
        try:
            return process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise

    def log(self, hive: str) -> str:
        path = self.worker_log(hive)
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def logs(self) -> str:
        parts = [f"--- worker {h} ---\n{self.log(h)}" for h in sorted({*self.workers, "alpha", "beta"})]
        return "\n".join([*parts, f"--- web ---\n{self.dashboard.log()[-4000:]}"])

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(f"{POSTGRES}/{self.database}") as conn:
            return conn.execute(sql, params).fetchall()

    def submit(self, client: httpx.Client, model: str, hive: str) -> dict[str, Any]:
        response = client.post("/api/jobs/", json={"model": model, "hive": hive})
        assert response.status_code == 201, response.text
        return response.json()["jobs"][0]

    def wait_for(self, client: httpx.Client, job_id: int, states: tuple[str, ...]) -> dict[str, Any]:
        try:
            return self.dashboard.wait_for_job(client, job_id, states, timeout=45)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.logs()}") from None


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if reason := _unreachable():
        pytest.skip(reason)
    import psycopg

    token = secrets.token_hex(6)
    database, prefix = f"rbee_test_{token}", f"rbee_test_{token}:"
    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{database}"')
    hub = FakeHub().start()
    dashboard = LiveDashboard(
        tmp_path_factory.mktemp("scaled"),
        env={
            "DATABASE_URL": f"{POSTGRES}/{database}",
            "REDIS_URL": REDIS,
            "RBEE_REDIS_PREFIX": prefix,
            "RBEE_SCALED": "true",
            "HF_ENDPOINT": hub.url,
            "RBEE_HEARTBEAT_S": str(HEARTBEAT_S),
            "RBEE_PROGRESS_EVENTS_PER_S": "10",
            "RBEE_RETRY_BACKOFF": "0.1",
        },
    )
    cluster = Cluster(dashboard, hub, database)
    try:
        dashboard.setup().start()
        for hive in ("alpha", "beta"):
            cluster.start_worker(hive)
        yield cluster
    finally:
        tear_down(cluster, database, prefix)


@pytest.fixture(scope="module")
def client(cluster: Cluster) -> Iterator[httpx.Client]:
    client = cluster.dashboard.client()
    yield client
    client.close()


def _entry(client: httpx.Client, reference: str, hive: str) -> dict[str, Any]:
    entries = client.get("/api/models/", params={"hive": hive}).json()["models"]
    [entry] = [e for e in entries if e["reference"] == reference]
    return client.get(f"/api/models/{entry['id']}/").json()


def _actions(client: httpx.Client, job_id: int) -> list[str]:
    return [e["action"] for e in client.get(f"/api/jobs/{job_id}/events/").json()["events"]]


def test_it_downloads_on_the_hive_the_job_names(cluster: Cluster, client: httpx.Client) -> None:
    weights, only = blob(300_000, seed=1), blob(50_000, seed=2)
    cluster.hub.add_repo("acme/routed", {"model.safetensors": weights, "config.json": b"{}"})
    cluster.hub.add_repo("acme/alpha-only", {"model.safetensors": only})

    on_alpha = cluster.submit(client, "acme/routed", "alpha")
    on_beta = cluster.submit(client, "acme/routed", "beta")
    only_alpha = cluster.submit(client, "acme/alpha-only", "alpha")
    assert on_alpha["id"] != on_beta["id"]  # the same model on two hives is two jobs
    for job in (on_alpha, on_beta, only_alpha):
        assert cluster.wait_for(client, job["id"], ("succeeded", "failed"))["state"] == "succeeded"

    a, b = _entry(client, on_alpha["reference"], "alpha"), _entry(client, on_beta["reference"], "beta")
    assert a["id"] != b["id"]
    for entry, hive in ((a, "alpha"), (b, "beta")):
        folder = Path(entry["path"])
        assert folder.is_relative_to(cluster.models_dir(hive))
        assert sha256((folder / "model.safetensors").read_bytes()) == sha256(weights)
        assert {f["path"]: f["sha256"] for f in entry["files"]}["model.safetensors"] == sha256(weights)
    assert not any("alpha-only" in path for path in files_below(cluster.models_dir("beta")))
    assert any("alpha-only" in path for path in files_below(cluster.models_dir("alpha")))
    # Each job went through its hive's queue to that hive's worker process.
    for job, hive in ((on_alpha, "alpha"), (on_beta, "beta"), (only_alpha, "alpha")):
        [(queue, workers)] = cluster.query(
            "SELECT queue_name, worker_ids FROM django_tasks_database_dbtaskresult WHERE args_kwargs->'args'->>0 = %s",
            str(job["id"]),
        )
        assert queue == hive and workers[0].startswith(f"{hive}@")


def _seqs(message: str) -> list[int]:
    return [int(s) for s in re.findall(r'id="job-last-seq" data-seq="(\d+)"', message)]


def test_it_pushes_the_worker_s_narration_live_to_the_job_socket(cluster: Cluster, client: httpx.Client) -> None:
    weights = blob(1_200_000, seed=4)
    cluster.hub.add_repo("acme/live", {"model.safetensors": weights})
    cluster.hub.set_fault("acme/live", "model.safetensors", throttle_bps=500_000)
    job = cluster.submit(client, "acme/live", "beta")

    url = cluster.dashboard.url.replace("http://", "ws://") + f"/ws/jobs/{job['id']}/?after=0"
    cookie = f"sessionid={client.cookies['sessionid']}"
    socket_ = RawWebSocket(url, {"Origin": cluster.dashboard.url, "Cookie": cookie})
    received: list[tuple[float, str]] = []
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            message = socket_.receive(timeout=1)
            if message is not None:
                received.append((time.monotonic(), message))
                if "downloaded successfully" in message:
                    break
    finally:
        socket_.close()
    assert received and "downloaded successfully" in received[-1][1], cluster.logs()

    # The replay of stored events ends with the job as it is now (the header); all
    # that comes after went worker -> Redis -> web process -> socket while it ran.
    replay_end = next(i for i, (_t, m) in enumerate(received) if 'id="job-header"' in m)
    live = received[replay_end + 1 :]
    running = [t for t, m in live if 'class="badge running"' in m and 'id="job-progressbar"' in m]
    assert len(running) >= 3, cluster.logs()
    assert received[-1][0] - running[0] > 1.0  # told as it happened, not all at the end
    assert 'class="badge succeeded"' in received[-1][1]
    # No gap and no duplicate across the replay and the live stream.
    seqs = [s for _t, m in received for s in _seqs(m)]
    last = client.get(f"/api/jobs/{job['id']}/").json()["last_seq"]
    assert seqs == list(range(1, last + 1))


def test_it_resumes_a_job_whose_worker_was_killed(cluster: Cluster, client: httpx.Client) -> None:
    weights = blob(4_000_000, seed=5)
    cluster.hub.add_repo("acme/crash", {"model.safetensors": weights, "config.json": b"{}"})
    cluster.hub.set_fault("acme/crash", "model.safetensors", throttle_bps=1_500_000)
    job = cluster.submit(client, "acme/crash", "alpha")

    # Past the writer's 1 MiB buffer twice, so whole megabytes are on disk at the kill.
    deadline = time.monotonic() + 20
    while client.get(f"/api/jobs/{job['id']}/").json()["bytes_done"] < 2_300_000:
        assert time.monotonic() < deadline, cluster.logs()
        time.sleep(0.05)
    assert cluster.signal_worker("alpha", signal.SIGKILL) == -signal.SIGKILL
    cluster.hub.clear_faults("acme/crash", "model.safetensors")
    assert client.get(f"/api/jobs/{job['id']}/").json()["state"] == "running"  # nobody left to say otherwise

    # Back before its heartbeat is stale: the job resumes once it is (three beats).
    cluster.start_worker("alpha")
    done = cluster.wait_for(client, job["id"], ("succeeded", "failed"))
    assert done["state"] == "succeeded", done["error"]
    events = client.get(f"/api/jobs/{job['id']}/events/").json()["events"]
    [resumed] = [e for e in events if e["action"] == "model_download_resumed" and e["target"] == "model.safetensors"]
    assert resumed["fields"]["offset"] >= 1024 * 1024
    gets = cluster.hub.gets("acme/crash", "model.safetensors")
    from_file_host = [g.range for g in gets if g.path.startswith("/lfs/")]
    assert from_file_host == [None, f"bytes={resumed['fields']['offset']}-"]  # the rest, not the whole file again
    entry = _entry(client, done["reference"], "alpha")
    assert {f["path"]: f["sha256"] for f in entry["files"]}["model.safetensors"] == sha256(weights)
    assert sha256((Path(entry["path"]) / "model.safetensors").read_bytes()) == sha256(weights)
    assert not (cluster.models_dir("alpha") / ".partial" / str(job["id"])).exists()


def test_it_hands_the_job_back_when_a_worker_is_stopped(cluster: Cluster, client: httpx.Client) -> None:
    weights = blob(1_500_000, seed=6)
    cluster.hub.add_repo("acme/handback", {"model.safetensors": weights})
    cluster.hub.set_fault("acme/handback", "model.safetensors", throttle_bps=400_000)
    job = cluster.submit(client, "acme/handback", "beta")
    deadline = time.monotonic() + 20
    while client.get(f"/api/jobs/{job['id']}/").json()["bytes_done"] < 300_000:
        assert time.monotonic() < deadline, cluster.logs()
        time.sleep(0.05)

    started = time.monotonic()
    assert cluster.signal_worker("beta", signal.SIGTERM) == 0, cluster.log("beta")
    assert time.monotonic() - started < 5  # it does not wait for the download to end
    stopped = client.get(f"/api/jobs/{job['id']}/").json()
    assert stopped["state"] == "queued"
    events = client.get(f"/api/jobs/{job['id']}/events/").json()["events"]
    assert events[-1]["action"] == "model_download_queued" and events[-1]["fields"]["requeued"]
    assert list((cluster.models_dir("beta") / ".partial" / str(job["id"])).iterdir())  # kept to resume

    cluster.hub.clear_faults("acme/handback", "model.safetensors")
    cluster.start_worker("beta")
    done = cluster.wait_for(client, job["id"], ("succeeded", "failed"))
    assert done["state"] == "succeeded", done["error"]
    assert "model_download_resumed" in _actions(client, job["id"])
    entry = _entry(client, done["reference"], "beta")
    assert sha256((Path(entry["path"]) / "model.safetensors").read_bytes()) == sha256(weights)


def test_it_holds_jobs_for_a_hive_without_a_worker(cluster: Cluster, client: httpx.Client) -> None:
    weights = blob(100_000, seed=7)
    cluster.hub.add_repo("acme/waits", {"model.safetensors": weights})
    cluster.start_worker("gamma")
    assert cluster.signal_worker("gamma", signal.SIGTERM) == 0
    # Offline once three heartbeats are missed.
    deadline = time.monotonic() + 10
    while cluster.query(
        "SELECT 1 FROM catalog_hive WHERE name = 'gamma' AND last_heartbeat > now() - %s * interval '1 second'",
        HEARTBEAT_S * 3,
    ):
        assert time.monotonic() < deadline
        time.sleep(0.1)

    job = cluster.submit(client, "acme/waits", "gamma")
    time.sleep(1.5)  # alpha and beta are polling their own queues all along
    assert client.get(f"/api/jobs/{job['id']}/").json()["state"] == "queued"
    [queued] = client.get(f"/api/jobs/{job['id']}/events/").json()["events"]
    assert "offline" in queued["human"]
    page = client.get(f"/jobs/{job['id']}/").text
    assert "hive gamma is offline" in page

    cluster.start_worker("gamma")
    done = cluster.wait_for(client, job["id"], ("succeeded", "failed"))
    assert done["state"] == "succeeded", done["error"]
    entry = _entry(client, done["reference"], "gamma")
    assert Path(entry["path"]).is_relative_to(cluster.models_dir("gamma"))
    assert sha256((Path(entry["path"]) / "model.safetensors").read_bytes()) == sha256(weights)


def _embedded_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RBEE_", "DATABASE_URL", "REDIS_URL"))}
    return {**env, "RBEE_DATA_DIR": os.environ["RBEE_DATA_DIR"], "DJANGO_SETTINGS_MODULE": "rbee.settings"}


def test_it_needs_neither_service_in_the_embedded_default() -> None:
    probe = (
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.DATABASES['default']['ENGINE'], s.CHANNEL_LAYERS['default']['BACKEND'], "
        "s.TASKS['default']['BACKEND'], s.RBEE_SCALED, 'django_tasks_db' in s.INSTALLED_APPS)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=_embedded_env(), capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == [
        "django.db.backends.sqlite3",
        "channels.layers.InMemoryChannelLayer",
        "django_tasks_local.ThreadPoolBackend",
        "False",
        "False",
    ]


def test_it_refuses_a_hive_worker_in_the_embedded_default() -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "hive_worker", "--hive", "alpha"],
        cwd=ROOT,
        env=_embedded_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "scaled deployment" in result.stderr and "make run" in result.stderr

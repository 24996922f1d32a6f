"""The fleet for real: three hive workers that fetch from each other before the origin.

PostgreSQL, Redis, one daphne web process and a `hive_worker` for each of alpha, beta
and gamma, each with its own models dir and its own peer port, against the fake Hub
with its LFS bodies throttled, so that peers have time to help. The model is 3 × 24 MiB
(plus a config): large enough for a transfer to be under way when a peer is killed,
small enough for a 2-core machine shared with other work.
"""

from __future__ import annotations

import http.client
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import blob, sha256
from tests.live import LiveDashboard
from tests.servers.fakehub import FakeHub
from tests.test_scaled import HEARTBEAT_S, POSTGRES, REDIS, Cluster, _unreachable, tear_down

pytestmark = [pytest.mark.scaled, pytest.mark.slow]

HIVES = ("alpha", "beta", "gamma")
MIB = 1024 * 1024
FILE_SIZE = 24 * MIB
WEIGHTS = ("model-00001.safetensors", "model-00002.safetensors", "model-00003.safetensors")
ORIGIN_BPS = 16 * MIB  # per request: about 1.5 s per file from the origin


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Fleet(Cluster):
    ports: dict[str, int]

    def start_hive(self, hive: str) -> subprocess.Popen[bytes]:
        port = self.ports[hive]
        return self.start_worker(
            hive, env={"RBEE_PEER_LISTEN": f"127.0.0.1:{port}", "RBEE_PEER_URL": f"http://127.0.0.1:{port}"}
        )

    def logs(self) -> str:
        parts = [f"--- worker {h} ---\n{self.log(h)}" for h in HIVES]
        return "\n".join([*parts, f"--- web ---\n{self.dashboard.log()[-4000:]}"])

    def place(self, client: httpx.Client, model: str, hives: tuple[str, ...]) -> list[dict[str, Any]]:
        response = client.post("/api/jobs/", json={"model": model, "hives": list(hives)})
        assert response.status_code == 201, response.text
        return response.json()["jobs"]

    def origin_bytes(self, repo: str, paths: tuple[str, ...]) -> int:
        self.hub.wait_idle(10)
        return sum(r.bytes_sent for path in paths for r in self.hub.gets(repo, path))

    def secret(self) -> str:
        [(key,)] = self.query("SELECT key FROM catalog_fleetsecret")
        return str(key)


@contextmanager
def running_fleet(data_dir: Path, hives: tuple[str, ...] = HIVES) -> Iterator[Fleet]:
    """PostgreSQL database, Redis prefix, fake Hub, web process and one worker per hive; all
    removed afterwards. Also what `make bench-fleet` runs on."""
    import psycopg

    token = secrets.token_hex(6)
    database, prefix = f"rbee_test_{token}", f"rbee_test_{token}:"
    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{database}"')
    hub = FakeHub().start()
    dashboard = LiveDashboard(
        data_dir,
        env={
            "DATABASE_URL": f"{POSTGRES}/{database}",
            "REDIS_URL": REDIS,
            "RBEE_REDIS_PREFIX": prefix,
            "RBEE_SCALED": "true",
            "HF_ENDPOINT": hub.url,
            "RBEE_HEARTBEAT_S": str(HEARTBEAT_S),
            "RBEE_PROGRESS_EVENTS_PER_S": "4",
            "RBEE_RETRY_BACKOFF": "0.1",
            "RBEE_DISK_RESERVE": "0",
        },
    )
    fleet = Fleet(dashboard, hub, database)
    fleet.ports = {hive: _free_port() for hive in hives}
    try:
        dashboard.setup().start()
        for hive in hives:
            fleet.start_hive(hive)
        yield fleet
    finally:
        tear_down(fleet, database, prefix)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    if reason := _unreachable():
        pytest.skip(reason)
    with running_fleet(tmp_path_factory.mktemp("fleet")) as fleet:
        yield fleet


@pytest.fixture(scope="module")
def client(fleet: Fleet) -> Iterator[httpx.Client]:
    client = fleet.dashboard.client()
    yield client
    client.close()


def _model(fleet: Fleet, repo: str, seed: int, size: int = FILE_SIZE, origin_bps: int = ORIGIN_BPS) -> dict[str, bytes]:
    """A repo of three weight files and a config, its weights throttled at the origin."""
    files = {name: blob(size, seed=seed + i) for i, name in enumerate(WEIGHTS)}
    files["config.json"] = b'{"architectures": ["Fleet"]}'
    fleet.hub.add_repo(repo, files)
    for name in WEIGHTS:
        fleet.hub.set_fault(repo, name, throttle_bps=origin_bps)
    return files


def _wait_all(fleet: Fleet, client: httpx.Client, jobs: list[dict[str, Any]], timeout: float = 120) -> list[dict[str, Any]]:
    done = []
    for job in jobs:
        try:
            done.append(fleet.dashboard.wait_for_job(client, job["id"], ("succeeded", "failed", "cancelled"), timeout))
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{fleet.logs()}") from None
    return done


def _assert_verified(fleet: Fleet, client: httpx.Client, job: dict[str, Any], files: dict[str, bytes]) -> None:
    assert job["state"] == "succeeded", (job, fleet.logs())
    entry = client.get(f"/api/models/{job['entry_id']}/").json()
    folder = Path(entry["path"])
    assert folder.is_relative_to(fleet.models_dir(job["hive"]))
    recorded = {f["path"]: f["sha256"] for f in entry["files"]}
    for name, data in files.items():
        assert sha256((folder / name).read_bytes()) == sha256(data), (job["hive"], name)
        assert recorded[name] == sha256(data)


def _events(client: httpx.Client, job_id: int) -> list[dict[str, Any]]:
    return client.get(f"/api/jobs/{job_id}/events/").json()["events"]


def test_it_places_a_model_on_three_hives_for_about_one_origin_copy(fleet: Fleet, client: httpx.Client) -> None:
    files = _model(fleet, "acme/fleet-one", seed=10)
    model_bytes = sum(len(d) for d in files.values())
    started = time.monotonic()
    jobs = _wait_all(fleet, client, fleet.place(client, "acme/fleet-one", HIVES))
    elapsed = time.monotonic() - started
    for job in jobs:
        _assert_verified(fleet, client, job, files)
    served = fleet.origin_bytes("acme/fleet-one", WEIGHTS)
    assert served <= 1.1 * model_bytes, (served, model_bytes, fleet.logs())
    from_peers = sum(j["bytes_from_peers"] for j in jobs)
    assert from_peers >= 2 * len(WEIGHTS) * FILE_SIZE, jobs
    assert all(j["bytes_from_origin"] + j["bytes_from_peers"] == model_bytes for j in jobs), jobs
    sources = [e["human"] for j in jobs for e in _events(client, j["id"]) if e["action"] == "model_download_source"]
    assert any("from hive 'alpha'" in s for s in sources), sources
    # Three copies took about the time of one from the origin, not three.
    assert elapsed < 3 * len(WEIGHTS) * FILE_SIZE / ORIGIN_BPS, elapsed


def test_a_killed_peer_leaves_the_others_to_finish_elsewhere(fleet: Fleet, client: httpx.Client) -> None:
    files = _model(fleet, "acme/fleet-kill", seed=20)
    jobs = fleet.place(client, "acme/fleet-kill", HIVES)
    first = jobs[0]
    assert first["hive"] == "alpha"
    # Kill alpha, which fetches from the origin for the others, once a peer takes a file from it.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        sources = [e["human"] for j in jobs[1:] for e in _events(client, j["id"]) if e["action"] == "model_download_source"]
        if any("from hive 'alpha'" in s for s in sources):
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"no hive fetched from alpha\n{fleet.logs()}")
    assert fleet.signal_worker("alpha", signal.SIGKILL) == -signal.SIGKILL
    others = _wait_all(fleet, client, jobs[1:])
    for job in others:
        _assert_verified(fleet, client, job, files)
    # Alpha's worker comes back and resumes its job, now from the hives that finished.
    fleet.start_hive("alpha")
    [resumed] = _wait_all(fleet, client, jobs[:1])
    _assert_verified(fleet, client, resumed, files)


def test_corrupted_bytes_from_a_peer_are_caught_and_fetched_elsewhere(fleet: Fleet, client: httpx.Client) -> None:
    files = _model(fleet, "acme/fleet-bad", seed=30)
    [on_alpha] = _wait_all(fleet, client, fleet.place(client, "acme/fleet-bad", ("alpha",)))
    assert on_alpha["state"] == "succeeded"
    # Alpha's disk rots: same size, other bytes. Its entry still says ready.
    rotten = Path(client.get(f"/api/models/{on_alpha['entry_id']}/").json()["path"]) / WEIGHTS[1]
    with open(rotten, "r+b") as f:
        f.seek(FILE_SIZE // 2)
        f.write(b"\0" * 4096)
    before = fleet.origin_bytes("acme/fleet-bad", WEIGHTS[1:2])
    [on_beta] = _wait_all(fleet, client, fleet.place(client, "acme/fleet-bad", ("beta",)))
    _assert_verified(fleet, client, on_beta, files)
    # The rotten file came from the origin again; the two good ones from alpha.
    assert fleet.origin_bytes("acme/fleet-bad", WEIGHTS[1:2]) - before >= FILE_SIZE
    assert on_beta["bytes_from_peers"] == 2 * FILE_SIZE, on_beta
    warnings = [e["human"] for e in _events(client, on_beta["id"]) if e["level"] == "warn"]
    assert any(WEIGHTS[1] in w and "sha256" in w for w in warnings), warnings


def test_peer_requests_need_a_fresh_signature_and_name_only_catalog_files(fleet: Fleet, client: httpx.Client) -> None:
    from provisioner.peers import sign

    files = {"model.safetensors": blob(100_000, seed=40)}
    fleet.hub.add_repo("acme/fleet-signed", files)
    [job] = _wait_all(fleet, client, fleet.place(client, "acme/fleet-signed", ("gamma",)))
    assert job["state"] == "succeeded"
    port, secret = fleet.ports["gamma"], fleet.secret()
    path = f"/peer/entry/{job['entry_id']}/model.safetensors"

    def get(target: str) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", target)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    assert get(sign(secret, "GET", path)) == (200, files["model.safetensors"])
    assert get(path)[0] == 403  # unsigned
    assert get(sign("forged-" + secret, "GET", path))[0] == 403
    assert get(sign(secret, "GET", path, now=time.time() - 3600))[0] == 403  # expired
    for outside in ("../../../../etc/passwd", "..%2F..%2F..%2Fetc%2Fpasswd", "config.json.bak"):
        assert get(sign(secret, "GET", f"/peer/entry/{job['entry_id']}/{outside}"))[0] == 404, outside
    assert get(sign(secret, "GET", "/etc/passwd"))[0] == 404
    worker_logs = "".join(fleet.log(h) for h in HIVES)
    assert secret not in worker_logs and secret not in fleet.dashboard.log()


def test_ensure_provisions_then_answers_with_the_path_on_that_hive(fleet: Fleet, client: httpx.Client) -> None:
    files = {"model.safetensors": blob(300_000, seed=50), "config.json": b"{}"}
    fleet.hub.add_repo("acme/fleet-ensure", files)
    first = client.post("/api/hives/beta/ensure/", json={"model": "acme/fleet-ensure"})
    assert first.status_code == 202, first.text
    job = first.json()["job"]
    again = client.post("/api/hives/beta/ensure/", json={"model": "acme/fleet-ensure"})
    assert again.status_code in (200, 202)
    if again.status_code == 202:
        assert again.json()["job"]["id"] == job["id"]
    _wait_all(fleet, client, [job])
    ready = client.post("/api/hives/beta/ensure/", json={"model": "acme/fleet-ensure"})
    assert ready.status_code == 200, ready.text
    entry = ready.json()["entry"]
    folder = Path(entry["path"])
    assert folder.is_relative_to(fleet.models_dir("beta"))
    assert (folder / "model.safetensors").read_bytes() == files["model.safetensors"]
    assert not os.path.exists(fleet.models_dir("alpha") / Path(entry["path"]).relative_to(fleet.models_dir("beta")))
    assert client.post("/api/hives/nowhere/ensure/", json={"model": "acme/fleet-ensure"}).status_code == 404


def test_files_from_peers_are_not_narrated_as_resumed(fleet: Fleet, client: httpx.Client) -> None:
    jobs = client.get("/api/jobs/", params={"hive": "gamma"}).json()["jobs"]
    [job] = [j for j in jobs if j["reference"] == "hf:acme/fleet-one"]
    events = _events(client, job["id"])
    from_peers = {e["fields"]["file"] for e in events if e["action"] == "model_download_source" and e["fields"].get("file")}
    assert from_peers, events
    assert not [e for e in events if e["action"] == "model_download_resumed" and e["fields"].get("file") in from_peers]

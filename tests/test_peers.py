"""Peer serving between hives: signed requests, and which files a hive may serve."""

from __future__ import annotations

import http.client
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from catalog.models import FileRecord, FleetSecret, Hive, ModelEntry
from provisioner.models import Action, DownloadJob
from provisioner.peers import PeerServer, check_signature, file_path, resolve, sign
from tests.helpers import blob, sha256

SECRET = "fleet-secret-for-tests"


# -- signing -------------------------------------------------------------------------------


def test_it_accepts_its_own_signature():
    assert check_signature(SECRET, "GET", sign(SECRET, "GET", "/peer/entry/1/model.bin"))


@pytest.mark.parametrize(
    "target",
    [
        "/peer/entry/1/model.bin",  # unsigned
        "/peer/entry/1/model.bin?expires=99999999999",  # no signature
        "/peer/entry/1/model.bin?sig=abc",  # no expiry
        "/peer/entry/1/model.bin?expires=soon&sig=abc",  # not a number
    ],
)
def test_it_refuses_unsigned_requests(target):
    assert not check_signature(SECRET, "GET", target)


def test_it_refuses_a_signature_made_with_another_secret():
    assert not check_signature(SECRET, "GET", sign("not-the-fleet-secret", "GET", "/peer/entry/1/model.bin"))


def test_it_refuses_a_signature_for_another_path_or_method():
    signed = sign(SECRET, "GET", "/peer/entry/1/model.bin")
    query = signed.split("?", 1)[1]
    assert not check_signature(SECRET, "GET", f"/peer/entry/2/model.bin?{query}")
    assert not check_signature(SECRET, "PUT", signed)


def test_it_refuses_an_expired_signature():
    signed = sign(SECRET, "GET", "/peer/entry/1/model.bin", now=time.time() - 120)
    assert not check_signature(SECRET, "GET", signed)


def test_it_refuses_a_signature_valid_for_longer_than_a_member_signs():
    signed = sign(SECRET, "GET", "/peer/entry/1/model.bin", ttl=3600)
    assert not check_signature(SECRET, "GET", signed)


def test_the_fleet_secret_is_generated_once_and_shared(db, settings):
    settings.RBEE_FLEET_SECRET = ""
    first = FleetSecret.get()
    assert len(first) == 64 and FleetSecret.get() == first
    assert first not in str(FleetSecret.objects.get())
    settings.RBEE_FLEET_SECRET = "from-the-environment"
    assert FleetSecret.get() == "from-the-environment"


# -- what a hive serves -----------------------------------------------------------------------


def _entry(hive: Hive, files: dict[str, bytes]) -> ModelEntry:
    folder = hive.path / "huggingface" / "acme" / "model"
    folder.mkdir(parents=True)
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return ModelEntry.objects.create_from_plan(
        hive=hive, reference="hf:acme/model", name="model", vendor="huggingface", revision="a" * 40,
        path=folder, models_root=hive.path,
        files=[FileRecord(n, len(d), sha256(d)) for n, d in files.items()],
    )


@pytest.fixture
def hives(transactional_db, tmp_path: Path) -> tuple[Hive, Hive]:
    here = Hive.register("alpha", tmp_path / "alpha", current=True)
    other = Hive.register("beta", tmp_path / "beta")
    yield here, other
    Hive._current_name = None


def test_it_resolves_files_of_its_catalog_entries(hives):
    here, _other = hives
    entry = _entry(here, {"model.bin": b"weights", "sub/config.json": b"{}"})
    assert resolve(here, file_path("entry", entry.pk, "model.bin")) == Path(entry.path) / "model.bin"
    assert resolve(here, file_path("entry", entry.pk, "sub/config.json")) == Path(entry.path) / "sub" / "config.json"


def test_it_refuses_paths_outside_the_entry_and_files_the_entry_does_not_list(hives):
    here, _other = hives
    entry = _entry(here, {"model.bin": b"weights"})
    (Path(entry.path) / "stray.txt").write_text("not in the catalog")
    (here.path / "secret.txt").write_text("no")
    for relative in ("stray.txt", "../secret.txt", "../../secret.txt", "%2e%2e/secret.txt", "/etc/passwd", ""):
        assert resolve(here, f"/peer/entry/{entry.pk}/{relative}") is None, relative
    assert resolve(here, "/etc/passwd") is None
    assert resolve(here, f"/peer/other/{entry.pk}/model.bin") is None


def test_it_serves_no_other_hives_entries_and_no_missing_ones(hives):
    here, other = hives
    theirs = _entry(other, {"model.bin": b"weights"})
    assert resolve(here, file_path("entry", theirs.pk, "model.bin")) is None
    mine = _entry(here, {"model.bin": b"weights"})
    ModelEntry.objects.filter(pk=mine.pk).update(status=ModelEntry.STATUS_MISSING)
    assert resolve(here, file_path("entry", mine.pk, "model.bin")) is None


def test_it_serves_a_downloading_file_only_once_it_is_verified(hives, alice):
    here, _other = hives
    job = DownloadJob.objects.create(reference="hf:acme/model", hive=here, state=DownloadJob.RUNNING)
    job.partial_dir.mkdir(parents=True)
    (job.partial_dir / "model.bin").write_bytes(b"half")
    assert resolve(here, file_path("job", job.pk, "model.bin")) is None
    job.narrate(Action.FILE_DONE, "done", fields={"file": "model.bin", "size": 4, "sha256": sha256(b"half")})
    assert resolve(here, file_path("job", job.pk, "model.bin")) == job.partial_dir / "model.bin"
    assert resolve(here, file_path("job", job.pk, "../model.bin")) is None
    DownloadJob.objects.filter(pk=job.pk).update(state=DownloadJob.CANCELLED)
    assert resolve(here, file_path("job", job.pk, "model.bin")) is None


def test_the_peer_server_serves_signed_ranges_and_refuses_the_rest(hives, settings):
    settings.RBEE_FLEET_SECRET = SECRET
    here, _other = hives
    data = blob(3 * 1024 * 1024 + 17, seed=4)
    entry = _entry(here, {"model.bin": data})
    server = PeerServer(here, "127.0.0.1:0").start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        path = file_path("entry", entry.pk, "model.bin")
        whole = httpx.get(base + sign(SECRET, "GET", path))
        assert whole.status_code == 200 and whole.content == data
        tail = httpx.get(base + sign(SECRET, "GET", path), headers={"Range": "bytes=1000-"})
        assert tail.status_code == 206 and tail.content == data[1000:]
        assert tail.headers["content-range"] == f"bytes 1000-{len(data) - 1}/{len(data)}"
        assert httpx.get(base + path).status_code == 403
        assert httpx.get(base + sign("forged", "GET", path)).status_code == 403
        assert httpx.get(base + sign(SECRET, "GET", path, now=time.time() - 120)).status_code == 403
        # Sent as is (an HTTP client would normalise the dots away): signed, and still refused.
        for relative in ("../../x", "..%2F..%2Fsecret.txt", "stray"):
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
            conn.request("GET", sign(SECRET, "GET", f"/peer/entry/{entry.pk}/{relative}"))
            assert conn.getresponse().status == 404, relative
            conn.close()
    finally:
        server.stop()


def test_an_entry_a_peer_reads_is_never_evicted(hives, settings):
    settings.RBEE_FLEET_SECRET = SECRET
    settings.RBEE_EVICT_MIN_IDLE_S = 0  # idle enough to go, were it not being read
    here, _other = hives
    entry = _entry(here, {"model.bin": blob(64 * 1024, seed=5)})
    assert not entry.is_being_served()
    server = PeerServer(here, "127.0.0.1:0").start()
    try:
        path = file_path("entry", entry.pk, "model.bin")
        assert httpx.get(f"http://127.0.0.1:{server.port}" + sign(SECRET, "GET", path)).status_code == 200
    finally:
        server.stop()
    entry.refresh_from_db()

    assert entry.is_being_served()
    plan = here.eviction_plan(10**18)  # room no disk has: every entry would have to go
    assert entry not in plan.victims
    assert (entry, "being read by another hive") in plan.blocking


# -- fetching from peers ----------------------------------------------------------------------


class VanishingPeer(ThreadingHTTPServer):
    """A peer that sends the first ``cut`` bytes of a file, then closes and is gone for good."""

    daemon_threads = True

    def __init__(self, data: bytes, cut: int) -> None:
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[:cut])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                threading.Thread(target=peer.vanish).start()

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def vanish(self) -> None:
        self.shutdown()
        self.server_close()


def test_a_peer_that_vanishes_mid_file_is_continued_from_another(hives, settings, alice):
    from django.utils import timezone

    from provisioner.peers import fetch_from_peers
    from provisioner.running import JobCancelToken, JobProgress
    from provisioner.vendors.base import Plan, PlannedFile

    settings.RBEE_SCALED = True
    settings.RBEE_FLEET_SECRET = SECRET
    here, beta = hives
    gamma = Hive.register("gamma", here.path.parent / "gamma")
    data = blob(3 * 1024 * 1024, seed=9)
    on_beta, on_gamma = _entry(beta, {"model.bin": data}), _entry(gamma, {"model.bin": data})
    vanishing = VanishingPeer(data, cut=1024 * 1024)
    serving = PeerServer(gamma, "127.0.0.1:0").start()
    try:
        Hive.objects.filter(pk=beta.pk).update(peer_url=f"http://127.0.0.1:{vanishing.server_address[1]}", last_heartbeat=timezone.now())
        Hive.objects.filter(pk=gamma.pk).update(peer_url=f"http://127.0.0.1:{serving.port}", last_heartbeat=timezone.now())
        plan = Plan("huggingface", "hf:acme/model", "a" * 40, [PlannedFile("model.bin", len(data), sha256(data))])
        job = DownloadJob.objects.create(
            reference="hf:acme/model", hive=here, state=DownloadJob.RUNNING, revision=plan.revision, plan=plan.to_json()
        )
        fetch_from_peers(job, plan, JobProgress(job, plan), JobCancelToken())
    finally:
        serving.stop()
    assert (job.partial_dir / "model.bin").read_bytes() == data
    job.refresh_from_db()
    assert job.bytes_from_peers == len(data) - 1024 * 1024  # what gamma sent; beta's MiB stayed on disk
    humans = list(job.events.order_by("seq").values_list("action", "human"))
    assert (Action.RESUMED, "Resuming model.bin from 1.0 MiB already on disk") in humans
    assert any(a == Action.SOURCE and "hive 'beta' could not serve it" in h for a, h in humans), humans
    assert humans[-1][0] == Action.FILE_DONE
    assert on_beta.pk != on_gamma.pk


def test_nothing_is_taken_from_a_peer_without_a_sha256_to_check_it_against(hives, settings):
    from django.utils import timezone

    from provisioner.peers import fetch_from_peers
    from provisioner.running import JobCancelToken, JobProgress
    from provisioner.vendors.base import Plan, PlannedFile

    settings.RBEE_SCALED = True
    here, beta = hives
    _entry(beta, {"config.json": b"{}"})
    Hive.objects.filter(pk=beta.pk).update(peer_url="http://127.0.0.1:9", last_heartbeat=timezone.now())
    plan = Plan("huggingface", "hf:acme/model", "a" * 40, [PlannedFile("config.json", 2, None)])
    job = DownloadJob.objects.create(reference="hf:acme/model", hive=here, state=DownloadJob.RUNNING, revision="a" * 40)
    fetch_from_peers(job, plan, JobProgress(job, plan), JobCancelToken())
    assert not (job.partial_dir / "config.json").exists()
    assert not job.events.exists()

"""A big file comes down as parallel ranged pieces that each survive the network on their own."""

from __future__ import annotations

import re
import signal
import threading
import time
from pathlib import Path

import pytest

from provisioner.models import DownloadJob
from tests.helpers import actions, blob, download, sha256, wait_finished
from tests.live import LiveDashboard

SIZE = 4 * 1024 * 1024 + 77
PIECE = 256 * 1024  # RBEE_PART_MIN_BYTES / 4
WEIGHTS = blob(SIZE, seed=21)
_RANGE = re.compile(r"bytes=(\d+)-(\d+)")


@pytest.fixture(autouse=True)
def _pieces(settings):
    settings.RBEE_PART_MIN_BYTES = 1024 * 1024
    settings.RBEE_CONNECTIONS = 8


@pytest.fixture
def repo(hub):
    hub.add_repo("acme/parallel", {"config.json": b"{}", "model.safetensors": WEIGHTS})
    return "acme/parallel"


def _gets(hub, repo="acme/parallel"):
    hub.wait_idle()
    return [r for r in hub.gets(repo, "model.safetensors") if r.status in (200, 206)]


def _ranged(gets):
    """The range requests: the file's first stream asks for no range (it is the fast path
    until one connection proves slow)."""
    first, *rest = gets
    assert first.range is None, "a file starts as one plain stream"
    return first, rest


def _span(record) -> tuple[int, int]:
    match = _RANGE.fullmatch(record.range or "")
    assert match, record.range
    return int(match[1]), int(match[2]) + 1


def _assert_whole(job: DownloadJob, data: bytes = WEIGHTS, name: str = "model.safetensors") -> None:
    assert job.state == DownloadJob.SUCCEEDED, job.error
    path = Path(job.entry.path) / name
    assert sha256(path.read_bytes()) == sha256(data)
    assert job.entry.files.get(path=name).sha256 == sha256(data)
    assert not list(Path(job.entry.path).glob("*.parts*"))


class _InFlight:
    """Samples the file host's log: the most ranged GETs sending at the same moment."""

    def __init__(self, hub) -> None:
        self.hub, self.most, self.running = hub, 0, True
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self) -> None:
        while self.running:
            busy = [r for r in self.hub.file_host.requests if r.method == "GET" and r.status == 206 and not r.done]
            self.most = max(self.most, len(busy))
            time.sleep(0.005)

    def stop(self) -> int:
        self.running = False
        self.thread.join()
        return self.most


def test_it_fetches_concurrent_ranges_that_cover_the_file_exactly(hub, repo, hive):
    hub.set_fault(repo, "model.safetensors", throttle_bps=2 * 1024 * 1024)
    watch = _InFlight(hub)
    job = download(repo, hive)
    most = watch.stop()
    _assert_whole(job)
    first, ranged = _ranged(_gets(hub))
    assert all(r.status == 206 for r in ranged)
    spans = sorted(_span(r) for r in ranged)
    # The parts take over where the first stream stopped, and cover the rest exactly.
    assert 0 < spans[0][0] <= first.bytes_sent and spans[-1][1] == SIZE
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False)), "gaps or overlaps"
    assert most >= 4, f"at most {most} ranged GETs were in flight together"
    assert "model_download_retry" not in actions(job)


def test_the_files_of_a_plan_share_the_connections(hub, hive, settings):
    settings.RBEE_CONNECTIONS = 3
    files = {f"part-{n}.safetensors": blob(300_000, seed=n) for n in range(6)}
    hub.add_repo("acme/many", files)
    for name in files:
        hub.set_fault("acme/many", name, throttle_bps=1024 * 1024)
    watch = _InFlight(hub)
    busy = []

    def sample() -> None:
        while watch.running:
            # Sending: a record is marked done a moment after its last byte left.
            busy.append(sum(1 for r in hub.file_host.requests if r.method == "GET" and r.bytes_sent < 300_000))
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    job = download("acme/many", hive)
    watch.stop()
    sampler.join()
    assert job.state == DownloadJob.SUCCEEDED, job.error
    assert 1 < max(busy) <= 3
    for name, data in files.items():
        assert (Path(job.entry.path) / name).read_bytes() == data


def test_a_part_cut_mid_body_resumes_where_it_was_cut(hub, repo, hive):
    hub.set_fault(repo, "model.safetensors", drop_after=100_000, throttle_bps=2 * 1024 * 1024)
    job = download(repo, hive)
    _assert_whole(job)
    _first, ranged = _ranged(_gets(hub))
    # Cut after 100 000 bytes: the next request asks for the rest from exactly there.
    assert ranged[0].range.startswith("bytes=100000-")
    retries = job.events.filter(action="model_download_retry")
    assert retries.count() == 1 and "closed" in retries.get().human


def test_only_the_stalled_part_retries_while_the_others_flow(hub, repo, hive, settings):
    settings.RBEE_STALL_TIMEOUT = 0.5
    hub.set_fault(repo, "model.safetensors", throttle_bps=512 * 1024)
    job, _ = DownloadJob.submit(repo, hive, None)
    deadline = time.monotonic() + 10
    while sum(1 for r in hub.file_host.requests if r.status == 206 and not r.done) < 3:  # parts, under way
        assert time.monotonic() < deadline
        time.sleep(0.005)
    # The next range asked for gets its headers, then nothing.
    hub.set_fault(repo, "model.safetensors", throttle_bps=512 * 1024, stall_after_headers=10)
    job = wait_finished(job)
    _assert_whole(job)
    _first, ranged = _ranged(_gets(hub))
    spans = [_span(r) for r in ranged]
    retries = list(job.events.filter(action="model_download_retry"))
    assert len(retries) == 1 and "stalled" in retries[0].human
    # The one range asked for twice is the stalled piece, whole: nothing of it had arrived.
    again = [s for s in spans if spans.count(s) == 2]
    assert len(again) == 2 and again[0][1] - again[0][0] <= PIECE


def test_a_server_that_ignores_range_gets_one_clean_stream(hub, repo, hive):
    # Slow enough that the first stream asks for parts, which the server then ignores.
    hub.set_fault(repo, "model.safetensors", ignore_range=True, throttle_bps=2 * 1024 * 1024)
    job = download(repo, hive)
    _assert_whole(job)
    assert any("ignored the range request" in e.human for e in job.events.all())
    last = _gets(hub)[-1]
    assert last.status == 200 and last.bytes_sent == SIZE


def test_a_file_changed_during_the_download_is_started_again(hub, hive):
    host = hub.file_host
    first, second = blob(SIZE, seed=1), blob(SIZE, seed=2)
    host.add_file("models/m.bin", first)
    host.set_fault("models/m.bin", throttle_bps=512 * 1024)
    job, _ = DownloadJob.submit(host.url_for("models/m.bin"), hive, None)
    deadline = time.monotonic() + 10
    while not any(r.status == 206 and r.done for r in host.gets("models/m.bin")):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    host.add_file("models/m.bin", second)  # same size, new ETag
    host.set_fault("models/m.bin", throttle_bps=4 * 1024 * 1024)
    job = wait_finished(job)
    _assert_whole(job, second, "m.bin")
    assert any("changed on the server" in e.human for e in job.events.all())


def test_cancel_cuts_every_part_within_two_seconds(hub, repo, hive, alice, alice_client, settings):
    settings.RBEE_STALL_TIMEOUT = 30.0
    hub.set_fault(repo, "model.safetensors", throttle_bps=128 * 1024)
    job, _ = DownloadJob.submit(repo, hive, alice)

    def in_flight() -> int:
        return sum(1 for r in hub.file_host.requests if r.method == "GET" and r.status == 206 and not r.done)

    deadline = time.monotonic() + 10
    while in_flight() < 4:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert alice_client.post(f"/jobs/{job.pk}/cancel/").status_code == 303
    cancelled_at = time.monotonic()
    while in_flight() or any(r.method == "GET" and not r.done for r in hub.file_host.requests):
        assert time.monotonic() - cancelled_at < 2.0, "a part kept its connection"
        time.sleep(0.01)
    job = wait_finished(job, timeout=5)
    assert job.state == DownloadJob.CANCELLED
    assert not job.partial_dir.exists()


@pytest.mark.slow
def test_a_sigkilled_server_resumes_every_part_from_its_state(hub, tmp_path):
    size = 8 * 1024 * 1024
    weights = blob(size, seed=33)
    hub.add_repo("acme/kill9-parts", {"config.json": b"{}", "model.safetensors": weights})
    hub.set_fault("acme/kill9-parts", "model.safetensors", throttle_bps=256 * 1024)
    env = {"HF_ENDPOINT": hub.url, "RBEE_STALL_TIMEOUT": "5", "RBEE_PART_MIN_BYTES": "2M"}
    live = LiveDashboard(tmp_path / "data", env=env)
    live.setup().start()
    piece = 512 * 1024
    try:
        client = live.client()
        [job] = client.post("/api/jobs/", json={"model": "acme/kill9-parts"}).json()["jobs"]
        deadline = time.monotonic() + 30
        while client.get(f"/api/jobs/{job['id']}/").json()["bytes_done"] < 2 * 1024 * 1024:
            assert time.monotonic() < deadline, live.log()
            time.sleep(0.05)
        live.kill(signal.SIGKILL)
        partial = tmp_path / "data" / "models" / ".partial" / str(job["id"])
        assert (partial / "model.safetensors.parts").exists()
        hub.wait_idle()
        before = len(hub.file_host.requests)
        hub.clear_faults()

        live.start()
        client = live.client()
        finished = live.wait_for_job(client, job["id"], ("succeeded", "failed"))
        assert finished["state"] == "succeeded", finished["error"]
        entry = client.get(f"/api/models/{finished['entry_id']}/").json()
        assert sha256(Path(entry["path"], "model.safetensors").read_bytes()) == sha256(weights)
        hub.wait_idle()
        after = [r for r in hub.file_host.requests[before:] if r.method == "GET"]
        spans = [_span(r) for r in after]
        assert any(start % piece for start, _ in spans), "no piece resumed mid-piece"
        assert sum(end - start for start, end in spans) <= size - 2 * 1024 * 1024
        events = client.get(f"/api/jobs/{job['id']}/events/").json()["events"]
        assert "model_download_resumed" in [e["action"] for e in events]
        assert not partial.exists()
    finally:
        live.stop()

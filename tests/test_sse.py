"""A job's narration as Server-Sent Events: resume without gap or duplicate, end at the end."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Iterator

import httpx
import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.test import AsyncClient

from accounts.models import ApiToken
from provisioner.models import Action, DownloadJob
from provisioner.narration import job_group
from provisioner.stream import narration_stream
from tests.helpers import blob
from tests.live import LiveDashboard


def sse_events(lines: Iterator[str]) -> Iterator[dict[str, str]]:
    """Parse an event stream into its events (comments are skipped)."""
    event: dict[str, str] = {}
    for line in lines:
        if line == "":
            if event:
                yield event
            event = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            event[name] = value.removeprefix(" ")


def _seqs(events: list[dict[str, str]]) -> list[int]:
    return [json.loads(e["data"])["seq"] for e in events]


@pytest.fixture
def live(hub, tmp_path):
    # About four seconds of download: time to read a few events, hang up, come back.
    hub.add_repo("acme/streamed", {"config.json": b"{}", "model.safetensors": blob(4 * 1024 * 1024, seed=5)})
    hub.set_fault("acme/streamed", "model.safetensors", throttle_bps=1024 * 1024)
    with LiveDashboard(tmp_path / "data", env={"HF_ENDPOINT": hub.url, "RBEE_PROGRESS_EVENTS_PER_S": "5"}) as dashboard:
        yield dashboard


@pytest.mark.slow
def test_a_client_resumes_where_it_hung_up_and_the_stream_ends_with_the_job(live):
    client = live.client()
    [job] = client.post("/api/jobs/", json={"model": "acme/streamed"}).json()["jobs"]
    url = f"/api/jobs/{job['id']}/stream/"

    first: list[dict[str, str]] = []
    with client.stream("GET", url, timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        for event in sse_events(response.iter_lines()):
            first.append(event)
            if len(first) == 4:
                break  # hang up mid-download
    assert live.wait_for_job(client, job["id"], ("running", "succeeded"))["state"] == "running"

    rest: list[dict[str, str]] = []
    headers = {"Last-Event-ID": first[-1]["id"]}
    with client.stream("GET", url + "?after=1", headers=headers, timeout=30) as response:
        rest = list(sse_events(response.iter_lines()))  # returns only when the server ends the stream

    events = first + rest
    seqs = _seqs(events)
    assert seqs == list(range(1, len(seqs) + 1)), seqs  # no gap, no duplicate, across the hang-up
    assert [e["id"] for e in events] == [str(s) for s in seqs]
    assert {e["event"] for e in events} == {"narration"}
    assert json.loads(events[-1]["data"])["action"] == "model_download_complete"
    assert "model_download_progress" in [json.loads(e["data"])["action"] for e in rest]
    done = client.get(f"/api/jobs/{job['id']}/").json()
    assert done["state"] == "succeeded" and done["last_seq"] == seqs[-1]
    stored = client.get(f"/api/jobs/{job['id']}/events/").json()["events"]
    assert [json.loads(e["data"]) for e in events] == stored  # the same JSON as /events/

    # A finished job: what remains after the id, then the end.
    with client.stream("GET", url, headers={"Last-Event-ID": str(seqs[-3])}, timeout=10) as response:
        assert _seqs(list(sse_events(response.iter_lines()))) == seqs[-2:]
    with client.stream("GET", f"{url}?after={seqs[-1]}", timeout=10) as response:
        assert list(sse_events(response.iter_lines())) == []

    anonymous = httpx.get(f"{live.url}{url}", timeout=10)
    assert anonymous.status_code == 401 and anonymous.json() == {"error": "authentication required"}
    assert "Traceback" not in live.log()  # the hang-up was cleaned up, not crashed through


@pytest.mark.slow
def test_open_streams_hold_no_thread_and_all_end_when_a_queued_job_is_cancelled(tmp_path):
    with LiveDashboard(tmp_path / "data") as live:
        # A hive with no worker running: the job stays queued and its streams stay open.
        live.manage("shell", "-c", "from catalog.models import Hive; Hive.objects.create(name='gpu-1')")
        client = live.client()
        [job] = client.post("/api/jobs/", json={"model": "acme/waits", "hive": "gpu-1"}).json()["jobs"]
        url = f"/api/jobs/{job['id']}/stream/"

        def threads() -> int:
            return len(os.listdir(f"/proc/{live.process.pid}/task"))  # type: ignore[union-attr]

        before = threads()
        streams = []
        with contextlib.ExitStack() as stack:
            for _ in range(12):
                response = stack.enter_context(client.stream("GET", url, timeout=30))
                lines = response.iter_lines()
                first = next(sse_events(lines))
                assert json.loads(first["data"])["action"] == "model_download_queued"
                streams.append(lines)
            time.sleep(0.5)
            assert threads() <= before + 2, (before, threads())

            assert client.post(f"/api/jobs/{job['id']}/cancel/").json()["state"] == "cancelled"
            for lines in streams:
                rest = list(sse_events(lines))  # ends: the cancel is the job's final event
                assert [json.loads(e["data"])["action"] for e in rest] == ["model_download_cancelled"]
        assert "Traceback" not in live.log()


@pytest.fixture
def bearer(alice) -> dict[str, str]:
    _, raw = ApiToken.issue(alice, "ci")
    return {"Authorization": f"Bearer {raw}"}


def _finished_job(hive) -> DownloadJob:
    job = DownloadJob.objects.create(reference="hf:acme/done", hive=hive)
    job.narrate(Action.QUEUED, "queued")
    job.narrate(Action.START, "start")
    job.state = DownloadJob.SUCCEEDED
    job.save(update_fields=["state"])
    job.narrate(Action.COMPLETE, "done")
    return job


async def _body(response) -> str:
    return b"".join([chunk async for chunk in response.streaming_content]).decode()


@pytest.mark.asyncio
async def test_it_takes_a_bearer_token_and_replays_a_finished_job(hive, bearer):
    job = await sync_to_async(_finished_job)(hive)
    client = AsyncClient()
    response = await client.get(f"/api/jobs/{job.pk}/stream/", headers=bearer)
    assert response.status_code == 200
    events = list(sse_events(iter((await _body(response)).split("\n"))))
    assert [e["id"] for e in events] == ["1", "2", "3"]
    resumed = await client.get(f"/api/jobs/{job.pk}/stream/?after=1", headers={**bearer, "Last-Event-ID": "2"})
    assert [e["id"] for e in sse_events(iter((await _body(resumed)).split("\n")))] == ["3"]


@pytest.mark.asyncio
async def test_it_refuses_like_the_rest_of_the_api(hive, bearer, bob):
    job = await sync_to_async(_finished_job)(hive)
    client = AsyncClient()
    assert (await client.get(f"/api/jobs/{job.pk}/stream/")).status_code == 401
    await sync_to_async(client.force_login)(bob)
    assert (await client.get(f"/api/jobs/{job.pk}/stream/")).status_code == 403
    missing = await AsyncClient().get("/api/jobs/999/stream/", headers=bearer)
    assert missing.status_code == 404 and missing.json() == {"error": "no job 999"}
    bad = await AsyncClient().get(f"/api/jobs/{job.pk}/stream/", headers={**bearer, "Last-Event-ID": "x"})
    assert bad.status_code == 400 and "Last-Event-ID" in bad.json()["fields"]


@pytest.mark.asyncio
async def test_a_quiet_stream_keeps_alive_and_leaves_the_group_when_the_client_goes(hive):
    job = await sync_to_async(DownloadJob.objects.create)(reference="hf:acme/quiet", hive=hive)
    layer = get_channel_layer()
    stream = narration_stream(job.pk, 0, keepalive_s=0.05)
    assert await anext(stream) == ": keep-alive\n\n"
    assert len(layer.groups[job_group(job.pk)]) == 1

    await sync_to_async(job.narrate)(Action.START, "start")
    frame = await asyncio.wait_for(anext(stream), 5)
    assert frame.startswith("id: 1\nevent: narration\ndata: {")

    await stream.aclose()  # what Django does when the client disconnects
    assert not layer.groups.get(job_group(job.pk))

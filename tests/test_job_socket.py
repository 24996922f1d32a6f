"""The job websockets through the real ASGI stack: auth, origin, order, replay."""

from __future__ import annotations

import re

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User
from django.test import Client

from catalog.models import Hive
from provisioner.consumers import JobConsumer
from provisioner.models import Action, DownloadJob
from rbee.asgi import application

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

ORIGIN = (b"origin", b"http://127.0.0.1:8000")


def _cookie_for(user: User) -> tuple[bytes, bytes]:
    client = Client()
    client.force_login(user)
    return (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())


@sync_to_async
def _setup(staff: bool = True) -> tuple[DownloadJob, tuple[bytes, bytes]]:
    user = User.objects.create_user(f"user{User.objects.count()}", password="x", is_staff=staff)
    job = DownloadJob.objects.create(reference="hf:org/name", hive=Hive.current(), requested_by=user)
    return job, _cookie_for(user)


@sync_to_async
def narrate_async(job: DownloadJob, action: str, human: str) -> None:
    job.narrate(Action(action), human)


def _event_seqs(html: str) -> list[int]:
    return [int(s) for s in re.findall(r'<li id="event-\d+" data-seq="(\d+)"', html)]


async def _receive_all(comm: WebsocketCommunicator, timeout: float = 1.0) -> list[str]:
    """Everything sent until the socket has been quiet for ``timeout`` seconds."""
    messages = []
    while not await comm.receive_nothing(timeout=timeout):
        messages.append(await comm.receive_from())
    return messages


async def test_it_closes_for_anonymous_users():
    job, _cookie = await _setup()
    comm = WebsocketCommunicator(application, f"/ws/jobs/{job.pk}/", headers=[ORIGIN])
    connected, _ = await comm.connect()
    assert not connected


async def test_it_closes_for_non_staff_users():
    job, cookie = await _setup(staff=False)
    comm = WebsocketCommunicator(application, f"/ws/jobs/{job.pk}/", headers=[ORIGIN, cookie])
    connected, _ = await comm.connect()
    assert not connected


async def test_it_closes_for_a_foreign_origin():
    job, cookie = await _setup()
    headers = [(b"origin", b"http://evil.example.com"), cookie]
    comm = WebsocketCommunicator(application, f"/ws/jobs/{job.pk}/", headers=headers)
    connected, _ = await comm.connect()
    assert not connected


async def test_the_job_list_socket_needs_staff_too():
    _job, cookie = await _setup(staff=False)
    comm = WebsocketCommunicator(application, "/ws/jobs/", headers=[ORIGIN, cookie])
    connected, _ = await comm.connect()
    assert not connected


async def test_it_replays_history_then_streams_live_in_seq_order():
    job, cookie = await _setup()
    for n in range(3):
        await narrate_async(job, "model_download_retry", f"stored {n}")
    comm = WebsocketCommunicator(application, f"/ws/jobs/{job.pk}/", headers=[ORIGIN, cookie])
    connected, _ = await comm.connect()
    assert connected
    for n in range(3, 6):
        await narrate_async(job, "model_download_retry", f"live {n}")
    received = await _receive_all(comm)
    seqs = [s for html in received for s in _event_seqs(html)]
    assert seqs == [1, 2, 3, 4, 5, 6]
    assert "stored 0" in received[0] and any("live 5" in m for m in received)
    assert any('id="job-progress"' in m and 'hx-swap-oob="true"' in m for m in received)
    await comm.disconnect()


async def test_a_socket_that_states_nothing_hears_everything_stored_then_live():
    """A raw client that never sends {"after": N}: found silent before, holding every
    live message in a list that grew without bound."""
    job, cookie = await _setup()
    await narrate_async(job, "model_download_start", "stored")
    comm = WebsocketCommunicator(application, f"/ws/jobs/{job.pk}/", headers=[ORIGIN, cookie])
    connected, _ = await comm.connect()
    assert connected
    await narrate_async(job, "model_download_plan", "live")
    received = await _receive_all(comm)
    assert [s for html in received for s in _event_seqs(html)] == [1, 2]
    await comm.disconnect()


class _SlowReplayConsumer(JobConsumer):
    """Live events pile up behind the first read of the table, past a tiny hold."""

    held_back = 2

    async def _stored_after(self, after):  # type: ignore[no-untyped-def]
        if not getattr(self, "piled_up", False):
            self.piled_up = True
            for n in range(6):
                await narrate_async(await _job(self.job_id), "model_download_retry", f"during {n}")
            assert len(self.held) <= self.held_back
        return await super()._stored_after(after)


_job = sync_to_async(lambda pk: DownloadJob.objects.get(pk=pk))


async def test_live_events_during_a_long_replay_are_bounded_and_not_lost():
    job, _cookie = await _setup()
    for n in range(5):
        await narrate_async(job, "model_download_retry", f"stored {n}")
    comm = WebsocketCommunicator(_SlowReplayConsumer.as_asgi(), f"/ws/jobs/{job.pk}/?after=0")
    comm.scope["user"] = await sync_to_async(lambda: job.requested_by)()
    comm.scope["url_route"] = {"kwargs": {"job_id": job.pk}}
    connected, _ = await comm.connect()
    assert connected
    received = await _receive_all(comm)
    assert [s for html in received for s in _event_seqs(html)] == list(range(1, 12))
    await comm.disconnect()


async def test_a_reconnect_gets_what_it_missed_without_duplicates():
    job, cookie = await _setup()
    comm = WebsocketCommunicator(application, f"/ws/jobs/{job.pk}/?after=0", headers=[ORIGIN, cookie])
    await comm.connect()
    await narrate_async(job, "model_download_start", "one")
    await narrate_async(job, "model_download_plan", "two")
    first = await _receive_all(comm)
    seen = [s for html in first for s in _event_seqs(html)]
    assert seen == [1, 2]
    await comm.disconnect()

    # Missed while away.
    await narrate_async(job, "model_download_retry", "three")
    await narrate_async(job, "model_download_retry", "four")

    comm = WebsocketCommunicator(application, f"/ws/jobs/{job.pk}/?after={seen[-1]}", headers=[ORIGIN, cookie])
    await comm.connect()
    await narrate_async(job, "model_download_retry", "five")
    second = await _receive_all(comm)
    again = [s for html in second for s in _event_seqs(html)]
    assert again == [3, 4, 5]
    await comm.disconnect()


async def test_progress_events_move_the_bar_without_filling_the_log():
    job, cookie = await _setup()
    comm = WebsocketCommunicator(application, f"/ws/jobs/{job.pk}/", headers=[ORIGIN, cookie])
    await comm.connect()
    await _receive_all(comm, timeout=0.3)

    @sync_to_async
    def progress() -> None:
        DownloadJob.objects.filter(pk=job.pk).update(state="running", bytes_done=512, bytes_total=1024)
        job.refresh_from_db()
        job.narrate(Action.PROGRESS, "50%", fields={"bytes_done": 512, "bytes_total": 1024})

    await progress()
    [message] = await _receive_all(comm)
    assert _event_seqs(message) == []
    assert 'max="1024" value="512"' in message
    assert 'data-seq="1"' in message  # the page's last-seq marker moves on
    await comm.disconnect()


async def test_the_job_list_socket_pushes_rows():
    job, cookie = await _setup()
    comm = WebsocketCommunicator(application, "/ws/jobs/", headers=[ORIGIN, cookie])
    connected, _ = await comm.connect()
    assert connected
    await comm.send_json_to({"resync": True})
    [rows] = await _receive_all(comm, timeout=0.5)
    assert 'id="job-rows"' in rows and f'id="job-row-{job.pk}"' in rows
    await narrate_async(job, "model_download_start", "go")
    [row] = await _receive_all(comm)
    assert f'<tr id="job-row-{job.pk}" hx-swap-oob="true">' in row
    await comm.disconnect()

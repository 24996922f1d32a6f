"""Logging out closes the websockets that login opened, and only those."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User
from django.test import Client

from catalog.models import Hive
from provisioner.models import DownloadJob
from rbee.asgi import application

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

ORIGIN = (b"origin", b"http://127.0.0.1:8000")


@sync_to_async
def _alice_logged_in_twice() -> tuple[DownloadJob, Client, Client]:
    """Alice on her laptop and on her desktop: two sessions of one user."""
    alice = User.objects.create_user("alice", password="alice-password", is_staff=True)
    job = DownloadJob.objects.create(reference="hf:org/name", hive=Hive.current(), requested_by=alice)
    laptop, desktop = Client(), Client()
    laptop.force_login(alice)
    desktop.force_login(alice)
    return job, laptop, desktop


async def _socket(path: str, client: Client) -> WebsocketCommunicator:
    cookie = (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())
    socket = WebsocketCommunicator(application, path, headers=[ORIGIN, cookie])
    connected, _ = await socket.connect()
    assert connected
    return socket


async def test_it_closes_the_sessions_sockets_on_logout():
    job, laptop, desktop = await _alice_logged_in_twice()
    job_page = await _socket(f"/ws/jobs/{job.pk}/", laptop)
    job_list = await _socket("/ws/jobs/", laptop)
    elsewhere = await _socket("/ws/jobs/", desktop)

    response = await sync_to_async(laptop.post)("/accounts/logout/")
    assert response.status_code == 302

    for socket in (job_page, job_list):
        closed = await socket.receive_output(timeout=2)
        assert closed == {"type": "websocket.close", "code": 4401}
    assert await elsewhere.receive_nothing(timeout=0.3)
    await elsewhere.disconnect()


async def test_a_socket_after_logout_is_refused():
    job, laptop, _desktop = await _alice_logged_in_twice()
    cookie = (b"cookie", f"sessionid={laptop.cookies['sessionid'].value}".encode())
    await sync_to_async(laptop.post)("/accounts/logout/")
    socket = WebsocketCommunicator(application, f"/ws/jobs/{job.pk}/", headers=[ORIGIN, cookie])
    connected, _ = await socket.connect()
    assert not connected

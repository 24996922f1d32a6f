"""Shared fixtures: named users, a models dir per test, and the test servers."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from django.test import Client

from catalog.models import Hive
from tests.servers.fakehub import FakeHub


@pytest.fixture(autouse=True)
def _fast_and_isolated(settings, tmp_path: Path) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.RBEE_MODELS_DIR = tmp_path / "models"
    settings.RBEE_DISK_RESERVE = 0
    settings.RBEE_RETRY_BACKOFF = 0.05
    settings.RBEE_STALL_TIMEOUT = 3.0
    settings.RBEE_PROGRESS_EVENTS_PER_S = 20.0
    settings.HF_TOKEN = None
    # Every test server listens on 127.0.0.1; tests of the address checks set their own.
    settings.RBEE_ALLOWED_PRIVATE_HOSTS = ["127.0.0.1", "localhost"]
    cache.clear()  # the API token throttle counts per address, and every test is 127.0.0.1


@pytest.fixture
def alice(db) -> User:
    """Alice runs the GPU fleet: a staff user, the dashboard's normal user."""
    return User.objects.create_user("alice", password="alice-password", is_staff=True)


@pytest.fixture
def bob(db) -> User:
    """Bob has an account on the site but is not staff: he must see nothing."""
    return User.objects.create_user("bob", password="bob-password")


@pytest.fixture
def alice_client(alice: User) -> Client:
    client = Client()
    client.force_login(alice)
    return client


@pytest.fixture
def bob_client(bob: User) -> Client:
    client = Client()
    client.force_login(bob)
    return client


@pytest.fixture
def hive(transactional_db) -> Hive:
    """The embedded default's hive. Transactional: download threads (the job's
    watcher, the task pool) use their own connections and must see committed rows."""
    return Hive.current()


@pytest.fixture
def hub(settings) -> Iterator[FakeHub]:
    """A fake Hugging Face Hub on 127.0.0.1, its LFS files behind a fault-injecting host."""
    with FakeHub() as fake:
        settings.HF_ENDPOINT = fake.url
        yield fake


@pytest.fixture
def small_disk(tmp_path, settings):
    """A 4 MiB tmpfs as the models dir: a disk that really fills up (CI runs as root)."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"mounting a tmpfs needs root: {result.stderr.decode().strip()}")
    settings.RBEE_MODELS_DIR = mount_point / "models"
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)

"""Secrets: from files as well as the environment, hidden on error pages, private on disk."""

from __future__ import annotations

import json
import os
import stat
import sys

import pytest
from django.test import RequestFactory
from django.views.debug import technical_500_response

from tests.test_security import manage

DATABASE_URL = "postgres://rbee:pg-pass-123@db.internal:5432/rbee"
REDIS_URL = "redis://:redis-pass-456@cache.internal:6379/0"

PRINT_SECRETS = (
    "import json; from django.conf import settings as s; print(json.dumps({'key': s.SECRET_KEY, 'hf': s.HF_TOKEN,"
    " 'db': s.DATABASE_URL, 'redis': s.REDIS_URL, 'admin': s.RBEE_ADMIN_PASSWORD, 'metrics': s.RBEE_METRICS_TOKEN}))"
)


def _error_page(accept: str) -> str:
    request = RequestFactory().get("/models/", HTTP_ACCEPT=accept)
    request.META["DATABASE_URL"] = DATABASE_URL  # runserver copies the environment into META
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        response = technical_500_response(request, *sys.exc_info())
    return response.content.decode()


@pytest.mark.parametrize("accept", ["text/html", "text/plain"])
def test_the_debug_page_hides_connection_urls(settings, accept):
    settings.DATABASE_URL = DATABASE_URL
    settings.REDIS_URL = REDIS_URL
    settings.CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [REDIS_URL]}}
    }
    settings.BROKER_LOCATION = "amqp://rbee:amqp-pass-789@mq.internal/"  # any URL with a password
    page = _error_page(accept)
    assert "DATABASE_URL" in page and "CHANNEL_LAYERS" in page  # the page is still useful
    for password in ("pg-pass-123", "redis-pass-456", "amqp-pass-789"):
        assert password not in page


def test_a_url_without_a_password_stays_readable(settings):
    settings.RBEE_OLLAMA_REGISTRY = "https://registry.ollama.ai"
    assert "https://registry.ollama.ai" in _error_page("text/html")


@pytest.mark.slow
def test_every_secret_can_come_from_a_file(tmp_path):
    values = {
        "DJANGO_SECRET_KEY": "k" * 60,
        "HF_TOKEN": "hf_from_file",
        "DATABASE_URL": DATABASE_URL,
        "REDIS_URL": REDIS_URL,
        "RBEE_ADMIN_PASSWORD": "admin-from-file",
        "RBEE_METRICS_TOKEN": "metrics-from-file",
    }
    env = {"RBEE_DATA_DIR": str(tmp_path / "data"), "RBEE_SCALED": "0"}
    for name, value in values.items():
        path = tmp_path / name.lower()
        path.write_text(value + "\n")  # as `echo` writes it
        env[f"{name}_FILE"] = str(path)
    result = manage("shell", "--no-imports", "-c", PRINT_SECRETS, env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == {
        "key": "k" * 60,
        "hf": "hf_from_file",
        "db": DATABASE_URL,
        "redis": REDIS_URL,
        "admin": "admin-from-file",
        "metrics": "metrics-from-file",
    }


@pytest.mark.slow
def test_an_unreadable_secret_file_stops_the_start(tmp_path):
    env = {"RBEE_DATA_DIR": str(tmp_path / "data"), "HF_TOKEN_FILE": str(tmp_path / "missing")}
    result = manage("check", env=env)
    assert result.returncode != 0
    assert "ImproperlyConfigured: HF_TOKEN_FILE names" in result.stderr and "cannot be read" in result.stderr


@pytest.mark.slow
def test_a_secret_set_twice_is_refused(tmp_path):
    (tmp_path / "token").write_text("one")
    env = {"RBEE_DATA_DIR": str(tmp_path / "data"), "HF_TOKEN": "two", "HF_TOKEN_FILE": str(tmp_path / "token")}
    result = manage("check", env=env)
    assert result.returncode != 0 and "Set HF_TOKEN or HF_TOKEN_FILE, not both" in result.stderr


@pytest.mark.slow
def test_a_fresh_data_dir_is_private(tmp_path):
    data = tmp_path / "data"
    result = manage("migrate", "--noinput", env={"RBEE_DATA_DIR": str(data)})
    assert result.returncode == 0, result.stderr

    def mode(path) -> int:
        return stat.S_IMODE(os.stat(path).st_mode)

    assert mode(data) == 0o700
    assert mode(data / "secret_key") == 0o600
    assert mode(data / "rbee.sqlite3") == 0o600
    assert (data / "rbee.sqlite3").stat().st_size > 0  # migrated, not just created
    for journal in ("rbee.sqlite3-wal", "rbee.sqlite3-shm"):
        if (data / journal).exists():
            assert mode(data / journal) == 0o600

"""Accounts: API tokens (hashed, expiring, throttled), login lockouts, the accounts app's place."""

from __future__ import annotations

import ast
import logging
import sqlite3
from datetime import timedelta
from pathlib import Path

from axes.models import AccessAttempt
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client, RequestFactory
from django.utils import timezone

from accounts.auth import client_address
from accounts.models import ApiToken, hash_token
from tests.live import LiveDashboard

ROOT = Path(__file__).resolve().parent.parent


def _bearer(raw: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {raw}"}


def _login(client: Client, username: str, password: str):
    return client.post("/accounts/login/", {"username": username, "password": password})


# API tokens


def test_it_stores_only_the_hash_of_a_token(alice):
    _token, raw = ApiToken.issue(alice, "ci")
    secret = raw.removeprefix("rbee_")
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            cursor.execute(f'SELECT * FROM "{table}"')
            for row in cursor.fetchall():
                assert not any(secret in str(value) for value in row), f"raw token found in {table}"
    assert ApiToken.objects.get().token_hash == hash_token(raw)


def test_it_refuses_an_expired_token_saying_so(client, alice):
    _token, raw = ApiToken.issue(alice, "ci", expires_at=timezone.now() - timedelta(seconds=1))
    response = client.get("/api/jobs/", headers=_bearer(raw))
    assert response.status_code == 401
    assert response.json() == {"error": "token expired"}
    assert ApiToken.objects.get().last_used_at is None


def test_it_accepts_a_token_before_it_expires(client, alice):
    _token, raw = ApiToken.issue(alice, "ci", expires_at=timezone.now() + timedelta(days=1))
    assert client.get("/api/jobs/", headers=_bearer(raw)).status_code == 200
    assert ApiToken.objects.get().last_used_at is not None


def test_it_refuses_the_token_of_a_deactivated_user(client, alice):
    _token, raw = ApiToken.issue(alice, "ci")
    User.objects.filter(pk=alice.pk).update(is_active=False)
    assert client.get("/api/jobs/", headers=_bearer(raw)).json() == {"error": "invalid API token"}


def test_the_admin_sets_an_expiry_and_shows_the_token_once(db):
    root = User.objects.create_superuser("root", "", "pw")
    admin = Client()
    admin.force_login(root)
    response = admin.post(
        "/admin/accounts/apitoken/add/",
        {"name": "nightly", "user": root.pk, "expires_at_0": "2031-01-02", "expires_at_1": "03:04:05"},
        follow=True,
    )
    raw = response.content.decode().split("copy it now): ")[1].split("<")[0].strip()
    token = ApiToken.objects.get()
    assert token.expires_at is not None and token.expires_at.year == 2031
    assert ApiToken.authenticate(raw) == token
    page = admin.get(f"/admin/accounts/apitoken/{token.pk}/change/").content.decode()
    assert raw not in page and token.prefix in page


def test_it_requires_login_for_the_token_admin(client, alice):
    response = client.get("/admin/accounts/apitoken/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_it_throttles_wrong_tokens_per_address(client, alice, settings, caplog):
    settings.RBEE_TOKEN_FAILURE_LIMIT = 3
    _token, raw = ApiToken.issue(alice, "ci")
    for n in range(3):
        assert client.get("/api/jobs/", headers=_bearer(f"rbee_guess{n}")).status_code == 401
    refused = client.get("/api/jobs/", headers=_bearer(raw))
    assert refused.status_code == 429
    assert int(refused["Retry-After"]) == settings.RBEE_TOKEN_FAILURE_WINDOW_S
    assert "API token attempts throttled" in caplog.text and "127.0.0.1" in caplog.text
    assert "rbee_guess" not in caplog.text
    # Another address is not punished for this one's guesses.
    elsewhere = Client(REMOTE_ADDR="192.0.2.7")
    assert elsewhere.get("/api/jobs/", headers=_bearer(raw)).status_code == 200


# Logins


def test_it_locks_an_account_out_after_the_failure_limit(alice, settings, caplog):
    settings.AXES_FAILURE_LIMIT = 3
    for n in range(3):
        # Each guess from its own address: the account is what is being guessed.
        response = _login(Client(REMOTE_ADDR=f"198.51.100.{n}"), "alice", f"wrong-{n}")
        assert response.status_code in (200, 429)
    response = _login(Client(REMOTE_ADDR="198.51.100.99"), "alice", "alice-password")
    assert response.status_code == 429
    assert "Too many failed logins" in response.content.decode()
    assert "_auth_user_id" not in response.wsgi_request.session
    lockouts = [r for r in caplog.records if r.name == "accounts" and r.levelno == logging.WARNING]
    assert lockouts and "alice" in lockouts[0].getMessage() and "198.51.100." in lockouts[0].getMessage()
    assert "wrong-" not in caplog.text and "alice-password" not in caplog.text


def test_it_locks_an_address_out_whatever_the_username(alice, settings):
    settings.AXES_FAILURE_LIMIT = 3
    guesser = Client(REMOTE_ADDR="203.0.113.5")
    for name in ("root", "admin", "operator"):
        _login(guesser, name, "password")
    assert _login(guesser, "alice", "alice-password").status_code == 429
    # Alice at her own desk is not locked out by someone else's guessing.
    assert _login(Client(REMOTE_ADDR="192.0.2.1"), "alice", "alice-password").status_code == 302


def test_a_lockout_ends_after_the_cool_off(alice, settings):
    settings.AXES_FAILURE_LIMIT = 2
    client = Client()
    for _ in range(2):
        _login(client, "alice", "nope")
    assert _login(client, "alice", "alice-password").status_code == 429
    AccessAttempt.objects.update(attempt_time=timezone.now() - settings.AXES_COOLOFF_TIME - timedelta(seconds=1))
    assert _login(client, "alice", "alice-password").status_code == 302


def test_a_success_forgets_earlier_failures(alice, settings):
    settings.AXES_FAILURE_LIMIT = 3
    client = Client()
    for _ in range(2):
        _login(client, "alice", "nope")
    assert _login(client, "alice", "alice-password").status_code == 302
    client.post("/accounts/logout/")
    for _ in range(2):
        _login(client, "alice", "nope")
    assert _login(client, "alice", "alice-password").status_code == 302


def test_the_admin_login_is_locked_out_too(alice, settings):
    settings.AXES_FAILURE_LIMIT = 2
    client = Client()
    for _ in range(2):
        client.post("/admin/login/", {"username": "alice", "password": "nope"})
    assert client.post("/admin/login/", {"username": "alice", "password": "alice-password"}).status_code == 429


def test_the_client_address_comes_from_a_trusted_proxy_only(settings):
    request = RequestFactory().get("/", REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="6.6.6.6, 198.51.100.4")
    assert client_address(request) == "10.0.0.2"
    settings.RBEE_TRUSTED_PROXY_COUNT = 1
    assert client_address(request) == "198.51.100.4"  # the spoofable left part is ignored
    settings.RBEE_TRUSTED_PROXY_COUNT = 2
    assert client_address(request) == "6.6.6.6"


# The app itself


def test_it_keeps_tokens_issued_before_the_move(tmp_path):
    """A database from before the accounts app: its token rows come along, hashes intact."""
    live = LiveDashboard(tmp_path / "data")
    live.data_dir.mkdir(parents=True)
    live.manage("migrate", "--noinput", "auth")
    live.manage("migrate", "--noinput", "catalog", "0003_entry_models_root")
    db = sqlite3.connect(live.data_dir / "rbee.sqlite3")
    with db:
        db.execute(
            "INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, email, is_staff,"
            " is_active, date_joined) VALUES ('!', 0, 'ci-bot', '', '', '', 1, 1, '2026-01-01 00:00:00')"
        )
        db.execute(
            "INSERT INTO catalog_apitoken (name, prefix, token_hash, created_at, last_used_at, user_id)"
            " VALUES ('ci', 'rbee_abcd', ?, '2026-01-02 03:04:05', NULL, 1)",
            (hash_token("rbee_abcdefgh"),),
        )
    db.close()

    live.manage("migrate", "--noinput")

    db = sqlite3.connect(live.data_dir / "rbee.sqlite3")
    rows = db.execute("SELECT name, prefix, token_hash, created_at, user_id, expires_at FROM accounts_apitoken").fetchall()
    tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    db.close()
    assert rows == [("ci", "rbee_abcd", hash_token("rbee_abcdefgh"), "2026-01-02 03:04:05", 1, None)]
    assert "catalog_apitoken" not in tables


def test_accounts_imports_neither_catalog_nor_provisioner():
    """Layers run rbee ← accounts ← catalog ← provisioner."""
    for path in (ROOT / "accounts").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in ("catalog", "provisioner"), f"{path} imports {name}"

"""Response headers, the CSP the pages live under, error pages that leak nothing,
and `check --deploy` clean in the documented production environment."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
import socket
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import django_htmx
import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client

from tests.live import LiveDashboard

ROOT = Path(__file__).resolve().parent.parent

HTMX_STYLE = "'sha256-faU7yAF8NxuMTNEwVmBz+VcYeIoBQ2EMHW3WaVxCvnk='"
CSP = (
    f"default-src 'self'; script-src 'self'; style-src 'self' {HTMX_STYLE}; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'; object-src 'none'"
)


class InlineCode(HTMLParser):
    """Collects what a CSP without 'unsafe-inline' would block: inline scripts,
    style attributes and elements, event handler attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name for name, _value in attrs}
        if tag == "script" and "src" not in names:
            self._in_script = True
        if tag == "style":
            self.found.append("<style> element")
        if "style" in names:
            self.found.append(f"style attribute on <{tag}>")
        self.found += [f"{name} on <{tag}>" for name in names if name.startswith("on")]

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.found.append(f"inline script: {data.strip()[:60]}")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False


def inline_code(html: str) -> list[str]:
    parser = InlineCode()
    parser.feed(html)
    return parser.found


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("RBEE_", "DJANGO_", "DEBUG"))}
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env={**base, **env}, capture_output=True, text=True, timeout=120
    )


def production_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """The production environment the README documents."""
    return {
        "RBEE_DATA_DIR": str(data_dir),
        "RBEE_PRODUCTION": "1",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "models.example.com",
        **extra,
    }


@pytest.fixture
def root_client(db) -> Client:
    """Root is the superuser created on first start."""
    client = Client()
    client.force_login(User.objects.create_superuser("root", "", "pw"))
    return client


# Headers


def test_it_sends_the_security_headers_on_every_page(alice_client, client, db):
    for response in (alice_client.get("/models/"), client.get("/accounts/login/"), client.get("/api/jobs/")):
        assert response["Content-Security-Policy"] == CSP
        assert response["X-Frame-Options"] == "DENY"
        assert response["Referrer-Policy"] == "same-origin"
        assert response["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("path", ["/models/", "/jobs/", "/jobs/new/", "/hives/"])
def test_the_dashboard_pages_need_no_inline_code(alice_client, hive, path):
    response = alice_client.get(path)
    assert response.status_code == 200
    assert inline_code(response.content.decode()) == []


@pytest.mark.parametrize("path", ["/accounts/login/", "/admin/login/"])
def test_the_login_pages_need_no_inline_code(client, db, path):
    assert inline_code(client.get(path).content.decode()) == []


@pytest.mark.parametrize(
    "path",
    [
        "/admin/",
        "/admin/accounts/apitoken/",
        "/admin/accounts/apitoken/add/",
        "/admin/auth/user/",
        "/admin/auth/user/add/",
        "/admin/catalog/modelentry/",
        "/admin/provisioner/downloadjob/",
    ],
)
def test_the_admin_works_under_the_same_csp(root_client, hive, path):
    response = root_client.get(path)
    assert response.status_code == 200
    assert response["Content-Security-Policy"] == CSP
    assert inline_code(response.content.decode()) == []


def test_the_csp_allows_exactly_the_style_the_installed_htmx_inserts():
    """htmx adds its indicator rules as a <style> element; an upgrade that changes them
    must change the hash in SECURE_CSP too, or indicators show all the time."""
    source = (Path(django_htmx.__file__).parent / "static/django_htmx/htmx-2.min.js").read_text()
    parts = re.search(r'`<style\$\{e\}>`\+`([^`]*)`\+`([^`]*)`\+"</style>"', source)
    assert parts, "htmx no longer inserts its indicator style the way it did: check the CSP in a browser"
    css = (parts[1] + parts[2]).replace("${t}", "htmx-indicator").replace("${n}", "htmx-request")
    digest = base64.b64encode(hashlib.sha256(css.encode()).digest()).decode()
    assert settings.SECURE_CSP["style-src"] == ["'self'", f"'sha256-{digest}'"]


def test_the_csrf_token_never_goes_into_a_url():
    """Daphne's access log writes every path with its query string: a form that sends
    its fields in a GET (a plain GET form, or hx-get including a POST form) must not
    hold the CSRF token."""
    offenders = []
    for template in (ROOT / "templates").rglob("*.html"):
        text = template.read_text()
        forms = {m.group(1): m.group(0) for m in re.finditer(r'<form[^>]*id="([^"]+)".*?</form>', text, re.S)}
        for form in re.finditer(r"<form\b[^>]*>.*?</form>", text, re.S):
            opening = form.group(0).split(">", 1)[0]
            if "csrf_token" in form.group(0) and 'method="post"' not in opening:
                offenders.append(f"{template.name}: a GET form holds the token")
        for include in re.finditer(r'hx-get="[^"]*"[^>]*hx-include="#([^"]+)"', text):
            if "csrf_token" in forms.get(include.group(1), ""):
                offenders.append(f"{template.name}: hx-get includes #{include.group(1)}, which holds the token")
    assert offenders == []


# Error pages


@pytest.mark.urls("tests.urls_failing")
def test_a_server_error_shows_no_traceback_or_setting(alice, settings):
    settings.DEBUG = False
    client = Client(raise_request_exception=False)
    client.force_login(alice)
    response = client.get("/boom/")
    assert response.status_code == 500
    body = response.content.decode()
    assert "Traceback" not in body and "RuntimeError" not in body and "hunter2" not in body
    assert "the database fell over" not in body


def test_an_unknown_page_is_a_plain_404(alice_client):
    response = alice_client.get("/no/such/page/")
    assert response.status_code == 404
    assert "Traceback" not in response.content.decode()


@pytest.mark.slow
def test_the_real_server_answers_404_for_paths_out_of_static(tmp_path):
    """Daphne serves static files itself: a path climbing out of them is a 404, not a 500."""
    with LiveDashboard(tmp_path / "data") as live:
        answers = {}
        for path in ("/static/../rbee/settings.py", "/static/%2e%2e/manage.py", "/static/nothing.css", "/nothing/"):
            with socket.create_connection(("127.0.0.1", live.port), timeout=10) as conn:
                conn.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
                raw = b""
                while chunk := conn.recv(65536):
                    raw += chunk
            answers[path] = raw.decode(errors="replace")
        css = live.client().get("/static/rbee/rbee.css")
        log = live.log()
    for path, answer in answers.items():
        assert answer.startswith("HTTP/1.1 404"), (path, answer[:300])
        assert "Traceback" not in answer and "SECRET" not in answer and "import" not in answer
    assert "SuspiciousFileOperation" not in log and "Traceback" not in log
    assert css.status_code == 200 and css.headers["X-Content-Type-Options"] == "nosniff"


# Production


@pytest.mark.slow
def test_check_deploy_is_clean_in_production(tmp_path):
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=production_env(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


@pytest.mark.slow
def test_check_deploy_stays_clean_when_the_proxy_redirects_to_https(tmp_path):
    env = production_env(tmp_path, RBEE_SSL_REDIRECT="0", RBEE_BEHIND_TLS_PROXY="1")
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=env)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_production_turns_on_secure_cookies_hsts_and_trusts_no_proxy_unless_told(tmp_path):
    code = (
        "from django.conf import settings as s; print(s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE,"
        " s.SECURE_HSTS_SECONDS, s.SECURE_SSL_REDIRECT, s.SECURE_PROXY_SSL_HEADER)"
    )
    plain = manage("shell", "--no-imports", "-c", code, env=production_env(tmp_path, RBEE_HSTS_SECONDS="600"))
    assert plain.stdout.split() == ["True", "True", "600", "True", "None"], plain.stderr
    proxied = manage("shell", "--no-imports", "-c", code, env=production_env(tmp_path, RBEE_BEHIND_TLS_PROXY="1"))
    assert proxied.stdout.strip().endswith("('HTTP_X_FORWARDED_PROTO', 'https')"), proxied.stderr


@pytest.mark.slow
def test_production_refuses_debug(tmp_path):
    result = manage("check", env=production_env(tmp_path, DEBUG="1"))
    assert result.returncode != 0
    assert "DEBUG must be off" in result.stderr

"""The CSP and the session-bound sockets in a real browser against the real server."""

from __future__ import annotations

import time

import pytest

from tests.browser import chromium, login
from tests.live import LiveDashboard

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PAGES = [
    "/models/",
    "/jobs/",
    "/jobs/new/",
    "/admin/",
    "/admin/accounts/apitoken/add/",
    "/admin/catalog/modelentry/",
    "/admin/auth/user/1/change/",
]


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    with LiveDashboard(tmp_path_factory.mktemp("security") / "data") as dashboard:
        yield dashboard


def test_no_page_breaks_its_csp(live):
    violations: list[str] = []
    with chromium() as browser:
        page = browser.new_page()
        page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
        login(page, live)
        for path in PAGES:
            page.goto(f"{live.url}{path}")
            page.wait_for_load_state("networkidle")
    assert violations == []


def test_the_job_list_socket_connects_and_closes_on_logout(live):
    with chromium() as browser:
        context = browser.new_context()
        jobs_tab = context.new_page()
        sockets = []
        jobs_tab.on("websocket", lambda socket: sockets.append(socket))
        login(jobs_tab, live)
        jobs_tab.goto(f"{live.url}/jobs/")
        deadline = time.monotonic() + 10
        while not sockets and time.monotonic() < deadline:
            jobs_tab.wait_for_timeout(100)
        assert sockets, "the job list opened no websocket under the CSP"
        socket = sockets[0]
        assert not socket.is_closed()

        other_tab = context.new_page()  # same browser, same session
        other_tab.goto(f"{live.url}/models/")
        other_tab.click("form[action='/accounts/logout/'] button")
        other_tab.wait_for_url(f"{live.url}/accounts/login/")

        deadline = time.monotonic() + 10
        while not socket.is_closed() and time.monotonic() < deadline:
            jobs_tab.wait_for_timeout(100)
        assert socket.is_closed()

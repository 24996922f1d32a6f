"""The job page in a real browser: under a strict CSP, with an in-page cancel confirmation,
and honest about a dropped connection."""

from __future__ import annotations

import re

import pytest

from tests.browser import chromium, login
from tests.helpers import blob
from tests.live import LiveDashboard

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self' ws:"
EMOJI = re.compile(r"[\u2300-\u23ff\u2600-\u27bf\u2b00-\u2bff\U0001f000-\U0001faff\ufe0f]")
RECORD_VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", e => {
  window.__violations.push(e.violatedDirective + " " + e.blockedURI + " " + (e.sample || ""));
});
"""


@pytest.fixture
def live(hub, tmp_path):
    hub.add_repo("acme/csp-llama", {"config.json": b'{"model_type": "llama"}', "model.safetensors": blob(4 * 1024 * 1024, seed=5)})
    hub.set_fault("acme/csp-llama", "model.safetensors", throttle_bps=2 * 1024 * 1024)
    # Slow enough to cancel, or to restart the server under, while it runs.
    hub.add_repo("acme/slow-llama", {"model.safetensors": blob(12 * 1024 * 1024, seed=6)})
    hub.set_fault("acme/slow-llama", "model.safetensors", throttle_bps=384 * 1024)
    # Django's own CSP middleware with the policy a deployment sets (tests/settings_csp.py).
    env = {"HF_ENDPOINT": hub.url, "DJANGO_SETTINGS_MODULE": "tests.settings_csp"}
    with LiveDashboard(tmp_path / "data", env=env) as dashboard:
        yield dashboard


def start_slow_job(live: LiveDashboard) -> int:
    client = live.client()
    try:
        [job] = client.post("/api/jobs/", json={"model": "acme/slow-llama", "hive": "local"}).json()["jobs"]
        live.wait_for_job(client, job["id"], ("running",))
    finally:
        client.close()
    return job["id"]


def test_the_job_page_streams_under_a_csp_without_unsafe_inline(live):
    with chromium() as browser:
        page = browser.new_page()
        login(page, live)
        console: list[str] = []
        page.on("console", lambda message: console.append(message.text))
        page.add_init_script(RECORD_VIOLATIONS)
        response = page.goto(f"{live.url}/jobs/new/")
        assert response.headers["content-security-policy"] == CSP
        assert page.evaluate("typeof htmx") == "object"
        page.fill("input[name=model]", "acme/csp-llama")
        page.wait_for_selector("#plan-preview >> text=model.safetensors")  # the preview, a POST
        page.click("button:has-text('Download')")
        page.wait_for_url(re.compile(r".*/jobs/\d+/$"))
        assert page.evaluate("document.querySelector('meta[name=htmx-config]') !== null")

        seen: set[str] = set()
        for _ in range(600):
            seen.add(page.get_attribute("#job-progressbar", "value") or "")
            if page.locator("#job-state.succeeded").count():
                break
            page.wait_for_timeout(25)
        page.wait_for_selector("#job-state.succeeded", timeout=30_000)
        assert len(seen - {""}) >= 2, seen  # it streamed
        page.wait_for_selector("#job-events >> text=model_download_complete")

        assert page.evaluate("window.__violations") == []
        assert not [line for line in console if "Content Security Policy" in line], console
        # No <style> injected by htmx, and the events draw icons, not emoji.
        assert page.evaluate("document.querySelectorAll('style').length") == 0
        assert page.locator("#job-events svg.icon.done").count() >= 1
        assert not EMOJI.search(page.inner_text("#job-events"))
        assert page.title() == "succeeded · acme/csp-llama — rbee"

        page.goto(f"{live.url}/models/")
        page.goto(f"{live.url}/jobs/")
        assert page.evaluate("window.__violations") == []


def test_cancel_asks_on_the_page_first(live):
    job_id = start_slow_job(live)
    with chromium() as browser:
        page = browser.new_page()
        login(page, live)
        page.goto(f"{live.url}/jobs/{job_id}/")
        page.wait_for_selector("#job-state.running")
        page.evaluate("window.__loaded = true")

        page.click("#job-cancel")
        page.wait_for_selector("#cancel-confirm >> text=Cancel the download of acme/slow-llama?")
        page.wait_for_timeout(600)  # pushed progress replaces the header, not the question
        assert page.locator("#cancel-confirm").is_visible()
        page.click("text=Keep downloading")
        assert page.locator("#cancel-confirm").count() == 0
        page.wait_for_timeout(300)
        assert page.locator("#job-state.running").count() == 1

        page.click("#job-cancel")
        page.click("#cancel-confirm button:has-text('Cancel the download')")
        page.wait_for_selector("#job-state.cancelled", timeout=15_000)
        assert page.locator("#cancel-confirm").count() == 0
        assert page.evaluate("window.__loaded") is True  # all of it without leaving the page


def test_a_dropped_socket_says_disconnected_and_recovers(live):
    job_id = start_slow_job(live)
    with chromium() as browser:
        page = browser.new_page()
        login(page, live)
        page.goto(f"{live.url}/jobs/{job_id}/")
        page.wait_for_selector("#job-progress .eta >> text=left")
        page.wait_for_function("/^\\d+% · acme\\/slow-llama — rbee$/.test(document.title)")
        assert not page.locator("#live-status").is_visible()

        live.stop()
        page.wait_for_selector("#live-status", state="visible", timeout=10_000)
        assert page.title() == "disconnected · acme/slow-llama — rbee"
        assert not page.locator("#job-state").is_visible()
        assert not page.locator("#job-progress .eta").is_visible()
        assert not page.locator("#job-progress .speed").is_visible()

        live.start()
        page.wait_for_selector("#live-status", state="hidden", timeout=20_000)
        assert page.locator("#job-state").is_visible()
        page.wait_for_function("!document.title.startsWith('disconnected')")

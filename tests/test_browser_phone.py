"""The pages at a phone's width (390×844): nothing wider than the screen, the header whole;
and relative times that keep ticking while a page stays open."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from tests.browser import chromium, login
from tests.live import LiveDashboard

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PHONE = {"width": 390, "height": 844}

# Long names, tags, a long error and every state: what makes tables wide.
SEED = """
from catalog.models import Hive, ModelEntry
from provisioner.models import DownloadJob
hive = Hive.current()
for i in range(3):
    ModelEntry.objects.create(
        hive=hive, reference=f"hf:bartowski/Meta-Llama-3.1-70B-Instruct-abliterated-GGUF-{i}:Q4_K_M",
        name=f"bartowski/Meta-Llama-3.1-70B-Instruct-abliterated-GGUF-{i}:Q4_K_M", vendor="huggingface",
        revision="0123456789abcdef0123456789abcdef01234567", path=f"/srv/models/huggingface/bartowski/m{i}",
        size_bytes=42_520_000_000, file_count=3, tags="gguf, chat, long-context",
    )
DownloadJob.objects.create(reference="hf:Qwen/Qwen2.5-Coder-32B-Instruct-GPTQ-Int4-extra-long", hive=hive,
    state="running", bytes_total=19_000_000_000, bytes_done=8_000_000_000, speed_bps=120_000_000)
DownloadJob.objects.create(reference="hf:mistralai/Mistral-Large-Instruct-2411-with-a-very-long-name", hive=hive,
    state="failed", error="Hugging Face says the repo is gated: accept its licence on huggingface.co and set HF_TOKEN " * 2)
DownloadJob.objects.create(reference="ollama:registry.example.com/library/llama3.2:1b-instruct-q4_K_M", hive=hive)
"""


@pytest.fixture
def live(tmp_path):
    with LiveDashboard(tmp_path / "data") as dashboard:
        dashboard.manage("shell", "-c", SEED)
        yield dashboard


def assert_fits_the_screen(page, path: str) -> None:
    width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], f"{path}: the page is {width[0]} px wide on a {width[1]} px screen"
    links = page.locator("header.topbar a, header.topbar button")
    assert links.count() == 7  # the brand, five links and the log-out button
    for i in range(links.count()):
        box = links.nth(i).bounding_box()
        assert links.nth(i).is_visible() and box is not None, f"{path}: header link {i} hidden"
        assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], f"{path}: header link {i} clipped: {box}"


def test_the_pages_fit_a_phone(live, tmp_path):
    with chromium() as browser:
        page = browser.new_page(viewport=PHONE)
        login(page, live)
        running = None
        for path in ["/models/", "/jobs/", "/jobs/new/"]:
            page.goto(f"{live.url}{path}")
            assert_fits_the_screen(page, path)
            if path == "/jobs/":
                running = page.get_attribute("#job-rows tr:has(.badge.running) a", "href")
        page.goto(f"{live.url}/models/")
        assert page.locator("#catalog-results tbody tr").count() == 3
        page.click("text=bartowski/Meta-Llama-3.1-70B-Instruct-abliterated-GGUF-0:Q4_K_M")
        assert_fits_the_screen(page, "an entry")
        page.goto(f"{live.url}{running}")
        assert_fits_the_screen(page, "a job")
        assert page.locator("#job-progressbar").is_visible()


def test_relative_times_tick_while_the_page_stays_open(live):
    with chromium() as browser:
        page = browser.new_page()
        login(page, live)
        page.clock.install(time=datetime.now(UTC))
        page.goto(f"{live.url}/jobs/")
        first = page.locator("#job-rows time.rel").first
        assert re.fullmatch(r"now|(a|\d+)\sseconds? ago", first.inner_text()), first.inner_text()
        exact = first.get_attribute("title")

        page.clock.fast_forward(int(timedelta(minutes=3).total_seconds() * 1000))
        page.wait_for_function("document.querySelector('#job-rows time.rel').textContent === '3\\u00a0minutes ago'")
        assert first.get_attribute("title") == exact  # the exact time stays on hover

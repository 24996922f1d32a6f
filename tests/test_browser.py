"""An admin's first download, in a real browser against the real server."""

from __future__ import annotations

import re

import pytest

from tests.browser import chromium, login
from tests.helpers import blob
from tests.live import LiveDashboard

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def live(hub, tmp_path):
    weights = blob(6 * 1024 * 1024, seed=11)
    hub.add_repo("acme/browser-llama", {"config.json": b'{"model_type": "llama"}', "model.safetensors": weights})
    # Slow enough to watch: about three seconds for the weights.
    hub.set_fault("acme/browser-llama", "model.safetensors", throttle_bps=2 * 1024 * 1024)
    hub.add_repo(
        "acme/tiny-GGUF",
        {
            "tiny-Q4_K_M.gguf": blob(300_000, seed=1),
            "tiny-Q8_0.gguf": blob(500_000, seed=2),
            "README.md": b"# tiny",
        },
    )
    with LiveDashboard(tmp_path / "data", env={"HF_ENDPOINT": hub.url}) as dashboard:
        yield dashboard


def test_it_downloads_watches_finds_and_deletes_a_model(live):
    with chromium() as browser:
        page = browser.new_page()
        login(page, live)
        assert "No models yet" in page.content()

        page.click("text=Download your first model")
        page.fill("input[name=model]", "acme/browser-llama")
        page.wait_for_selector("#plan-preview >> text=model.safetensors")
        page.click("button:has-text('Download')")
        page.wait_for_url(re.compile(r".*/jobs/\d+/$"))
        job_url = page.url

        # The bar moves without a reload: record distinct values pushed over the socket.
        page.evaluate("window.__loaded = performance.timeOrigin")
        seen: list[int] = []
        titles: set[str] = set()
        for _ in range(400):
            value = page.get_attribute("#job-progressbar", "value")
            if value and (not seen or int(value) != seen[-1]):
                seen.append(int(value))
            titles.add(page.title())
            if page.locator("#job-state.succeeded").count():
                break
            page.wait_for_timeout(25)
        assert page.evaluate("window.__loaded") is not None, "the page reloaded"
        assert len([v for v in seen if 0 < v < 6 * 1024 * 1024 + 23]) >= 2, seen
        # The tab title carries the progress while the job runs.
        assert any(re.match(r"\d+% · .*browser-llama", title) for title in titles), titles

        page.wait_for_selector("#job-state.succeeded", timeout=30_000)
        assert page.locator("#job-events >> text=model_download_complete").count() == 1
        assert page.url == job_url

        page.click("text=Open in catalog")
        assert page.locator("h1").inner_text().startswith("acme/browser-llama")
        assert page.locator("text=model.safetensors").count() == 1

        page.goto(f"{live.url}/models/")
        page.click("text=acme/browser-llama")
        page.once("dialog", lambda dialog: dialog.accept())
        page.click("text=Delete…")
        page.wait_for_url(f"{live.url}/models/")
        assert "No models yet" in page.content()
        assert "Deleted acme/browser-llama" in page.content()


def test_a_reloaded_job_page_shows_the_story_once(live):
    with chromium() as browser:
        page = browser.new_page()
        login(page, live)
        page.goto(f"{live.url}/jobs/new/")
        page.fill("input[name=model]", "acme/browser-llama")
        page.click("button:has-text('Download')")
        page.wait_for_url(re.compile(r".*/jobs/\d+/$"))
        page.wait_for_timeout(800)
        page.reload()
        page.wait_for_selector("#job-state.succeeded", timeout=30_000)
        page.wait_for_timeout(300)
        seqs = page.eval_on_selector_all("#job-events li", "els => els.map(e => Number(e.dataset.seq))")
        assert seqs == sorted(set(seqs)), seqs
        actions = page.eval_on_selector_all("#job-events .action", "els => els.map(e => e.textContent)")
        assert actions.count("model_download_start") == 1
        assert actions.count("model_download_complete") == 1


def test_the_plan_preview_offers_quants_and_the_download_uses_that_plan(live):
    with chromium() as browser:
        page = browser.new_page()
        login(page, live)
        page.goto(f"{live.url}/jobs/new/")
        page.fill("input[name=model]", "acme/tiny-GGUF")
        page.wait_for_selector("#plan-preview >> text=Download takes")
        assert page.locator("#plan-preview .quants a").all_inner_texts() == ["Q4_K_M", "Q8_0"]
        assert "1 file" in page.inner_text("#plan-preview")  # one quant by default, not all of them

        page.click("#plan-preview .quants >> text=Q4_K_M")
        page.wait_for_selector("#plan-preview >> text=tiny-Q4_K_M.gguf")
        preview = page.inner_text("#plan-preview")
        assert "tiny-Q8_0.gguf" not in preview and "1 file" in preview and "Fits" in preview

        page.click("button:has-text('Download')")
        page.wait_for_url(re.compile(r".*/jobs/\d+/$"))
        page.wait_for_selector("#job-state.succeeded", timeout=30_000)
        page.click("text=Open in catalog")
        assert page.locator("td >> text=tiny-Q4_K_M.gguf").count() == 1  # the files table (the llama.cpp line names it too)
        assert page.locator("text=tiny-Q8_0.gguf").count() == 0


def test_an_unsupported_reference_is_refused_in_place(live):
    with chromium() as browser:
        page = browser.new_page()
        login(page, live)
        page.goto(f"{live.url}/jobs/new/")
        page.fill("input[name=model]", "just-a-word")
        page.click("button:has-text('Download')")
        page.wait_for_selector("#model-errors >> text=Supported forms")
        assert page.url == f"{live.url}/jobs/new/"
        assert page.input_value("input[name=model]") == "just-a-word"

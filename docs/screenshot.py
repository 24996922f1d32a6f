"""Take the README's screenshots from the real app: a job page mid-download, the catalog, a hive.

    .venv/bin/python docs/screenshot.py

Starts the test hub with a throttled repo and the dashboard on a throwaway data dir.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.browser import chromium, login  # noqa: E402
from tests.live import LiveDashboard  # noqa: E402
from tests.servers.fakehub import FakeHub  # noqa: E402


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, FakeHub() as hub:
        hub.add_repo("Qwen/Qwen2.5-0.5B-Instruct", {"config.json": b"{}", "tokenizer.json": b"{}", "model.safetensors": os.urandom(48 << 20)})
        hub.set_fault("Qwen/Qwen2.5-0.5B-Instruct", "model.safetensors", throttle_bps=6 << 20)
        hub.add_repo("bartowski/Llama-3.2-1B-Instruct-GGUF", {"Llama-3.2-1B-Instruct-Q4_K_M.gguf": os.urandom(12 << 20)})
        with LiveDashboard(Path(tmp) / "data", env={"HF_ENDPOINT": hub.url}) as live, chromium() as browser:
            page = browser.new_page(viewport={"width": 1180, "height": 760}, device_scale_factor=1)
            login(page, live)
            client = live.client()
            [done] = client.post("/api/jobs/", json={"model": "bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M"}).json()["jobs"]
            live.wait_for_job(client, done["id"], ("succeeded",))
            page.goto(f"{live.url}/jobs/new/")
            page.fill("input[name=model]", "Qwen/Qwen2.5-0.5B-Instruct")
            page.get_by_role("button", name="Download", exact=True).click()
            page.wait_for_url(re.compile(r".*/jobs/\d+/$"))
            # The page's CSP forbids evaluated strings: watch the bar from here.
            for _ in range(600):
                bar = page.locator("#job-progressbar")
                value, most = bar.get_attribute("value"), bar.get_attribute("max")
                if value and most and int(value) > 0.4 * int(most):
                    break
                page.wait_for_timeout(50)
            page.screenshot(path=str(ROOT / "docs" / "job-page.png"))
            page.wait_for_selector("#job-state.succeeded", timeout=60_000)
            page.goto(f"{live.url}/models/")
            page.screenshot(path=str(ROOT / "docs" / "catalog.png"))
            page.goto(f"{live.url}/hives/local/")
            page.screenshot(path=str(ROOT / "docs" / "hive.png"), full_page=True)
    print("wrote docs/job-page.png, docs/catalog.png and docs/hive.png")


if __name__ == "__main__":
    main()

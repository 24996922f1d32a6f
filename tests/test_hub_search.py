"""Searching the Hub from the download page, through huggingface_hub's list_models."""

from __future__ import annotations

import pytest

from tests.servers.fakehub import FakeHub


@pytest.fixture
def models(hub):
    hub.add_repo("acme/llama-tiny-GGUF", {"llama-tiny-Q4_K_M.gguf": b"GGUF" + bytes(64)}, info={"downloads": 500, "likes": 3})
    hub.add_repo("acme/llama-tiny", {"config.json": b"{}"}, info={"downloads": 9000, "likes": 1})
    hub.add_repo("other/llama-gated", {"config.json": b"{}"}, gated=True, info={"downloads": 10, "likes": 40})
    hub.add_repo("acme/qwen-small", {"config.json": b"{}"}, info={"downloads": 1, "likes": 0})
    return hub


def names(html: str) -> list[str]:
    import re

    return re.findall(r'class="hub-model-name" href="[^"]+"><code>([^<]+)</code>', html)


def test_it_requires_login(client, db):
    response = client.get("/jobs/search/?q=llama")
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_it_rejects_post(alice_client):
    assert alice_client.post("/jobs/search/", {"q": "llama"}).status_code == 405


def test_it_shows_matching_models_as_cards_sorted_by_downloads(models, alice_client):
    html = alice_client.get("/jobs/search/", {"q": "llama"}, headers={"HX-Request": "true"}).content.decode()

    assert names(html) == ["acme/llama-tiny", "acme/llama-tiny-GGUF", "other/llama-gated"]
    assert "<html" not in html  # a fragment for htmx
    assert "9K" in html  # downloads, compact
    assert 'class="badge off">gated' in html
    # One click fills the form (and the download page runs the preview on load).
    assert 'href="/jobs/new/?model=acme/llama-tiny-GGUF"' in html
    assert "style=" not in html and "<script" not in html  # the CSP allows neither


def test_it_filters_gguf_and_sorts_by_likes(models, alice_client):
    html = alice_client.get("/jobs/search/", {"q": "llama", "sort": "likes", "gguf": "1"}).content.decode()
    assert names(html) == ["acme/llama-tiny-GGUF"]
    html = alice_client.get("/jobs/search/", {"q": "llama", "sort": "likes"}).content.decode()
    assert names(html) == ["other/llama-gated", "acme/llama-tiny-GGUF", "acme/llama-tiny"]
    assert "<html" in html  # without htmx: the download page with the results


def test_it_pages_through_results(hub, alice_client):
    for n in range(25):
        hub.add_repo(f"bulk/model-{n:02d}", {"config.json": b"{}"}, info={"downloads": 100 - n})
    first = alice_client.get("/jobs/search/", {"q": "bulk"}, headers={"HX-Request": "true"}).content.decode()
    assert len(names(first)) == 20 and names(first)[0] == "bulk/model-00"
    assert "page=2" in first and "next →" in first
    second = alice_client.get("/jobs/search/", {"q": "bulk", "page": "2"}, headers={"HX-Request": "true"}).content.decode()
    assert names(second) == [f"bulk/model-{n:02d}" for n in range(20, 25)]
    assert "next →" not in second and "← previous" in second


def test_it_says_plainly_when_the_mirror_has_no_search(alice_client, settings):
    with FakeHub(mirror=True) as mirror:
        settings.HF_ENDPOINT = mirror.url
        html = alice_client.get("/jobs/search/", {"q": "llama"}, headers={"HX-Request": "true"}).content.decode()
    assert f"{mirror.url} does not offer the Hub&#x27;s model search (it answered 404)" in html


def test_it_asks_the_next_endpoint_when_the_first_is_down(models, alice_client, settings):
    from tests.test_mirrors import closed_port_url

    settings.RBEE_HF_ENDPOINTS = [closed_port_url(), models.url]
    html = alice_client.get("/jobs/search/", {"q": "qwen"}, headers={"HX-Request": "true"}).content.decode()
    assert names(html) == ["acme/qwen-small"]


def test_the_download_page_has_the_search_box(alice_client):
    html = alice_client.get("/jobs/new/").content.decode()
    assert 'action="/jobs/search/"' in html and 'hx-get="/jobs/search/"' in html

"""Every page: staff only, the right methods, and it renders."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from catalog.models import Hive, ModelEntry, ModelFile
from provisioner.models import Action, DownloadJob

PAGES = ["/models/", "/jobs/", "/jobs/new/"]


@pytest.fixture
def entry(hive, settings):
    folder = settings.RBEE_MODELS_DIR / "huggingface" / "org" / "name"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    entry = ModelEntry.objects.create(
        hive=hive, reference="hf:org/name", name="org/name", vendor="huggingface", revision="c" * 40,
        path=str(folder), size_bytes=2, file_count=1,
    )
    ModelFile.objects.create(entry=entry, path="config.json", size_bytes=2, sha256="d" * 64)
    return entry


@pytest.fixture
def job(hive, alice):
    return DownloadJob.objects.create(reference="hf:org/name", hive=hive, requested_by=alice)


@pytest.mark.parametrize("path", PAGES)
def test_it_requires_login(client, db, path):
    response = client.get(path)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")


@pytest.mark.parametrize("path", PAGES)
def test_it_refuses_non_staff(bob_client, path):
    assert bob_client.get(path).status_code == 403


@pytest.mark.parametrize("path", PAGES)
def test_it_renders_for_staff(alice_client, hive, path):
    response = alice_client.get(path)
    assert response.status_code == 200


def test_root_redirects_to_the_catalog(alice_client):
    response = alice_client.get("/")
    assert response.status_code == 302 and response["Location"] == "/models/"


def test_it_requires_login_for_entry_and_job_pages(client, entry, job):
    for path in [f"/models/{entry.pk}/", f"/jobs/{job.pk}/"]:
        assert client.get(path).status_code == 302


def test_it_shows_an_empty_catalog_with_what_to_do(alice_client, hive):
    body = alice_client.get("/models/").content.decode()
    assert "No models yet" in body
    assert 'href="/jobs/new/"' in body


def test_it_shows_an_entry_with_files_and_checksums(alice_client, entry):
    body = alice_client.get(f"/models/{entry.pk}/").content.decode()
    assert "config.json" in body and "d" * 64 in body and "c" * 12 in body and entry.path in body


def test_it_escapes_model_names(alice_client, entry):
    entry.name = "<script>alert(1)</script>"
    entry.save()
    body = alice_client.get("/models/").content.decode()
    assert "<script>alert(1)</script>" not in body
    assert "&lt;script&gt;" in body


def test_catalog_search_filter_sort(alice_client, entry, hive):
    ModelEntry.objects.create(hive=hive, reference="hf:x/big", name="x/big", vendor="ollama", path="/x", size_bytes=10)
    assert "x/big" not in alice_client.get("/models/?q=org").content.decode()
    assert "org/name" not in alice_client.get("/models/?vendor=ollama").content.decode()
    body = alice_client.get("/models/?sort=-size").content.decode()
    assert body.index("x/big") < body.index("org/name")
    fragment = alice_client.get("/models/?q=big", headers={"HX-Request": "true", "HX-Target": "catalog-results"})
    assert b"<html" not in fragment.content and b"x/big" in fragment.content


def test_job_page_shows_history_and_connects_its_socket(alice_client, job):

    job.narrate(Action.QUEUED, "Queued <b>it</b>")
    body = alice_client.get(f"/jobs/{job.pk}/").content.decode()
    assert f'ws-connect="/ws/jobs/{job.pk}/"' in body
    assert "Queued &lt;b&gt;it&lt;/b&gt;" in body
    assert 'data-seq="1"' in body
    assert "<progress" in body


def test_login_page_works(client, alice):
    response = client.post("/accounts/login/", {"username": "alice", "password": "alice-password"})
    assert response.status_code == 302
    assert client.get("/models/").status_code == 200


def test_it_rejects_get_of_post_only_actions(alice_client, job):
    assert alice_client.get(f"/jobs/{job.pk}/retry/").status_code == 405
    assert alice_client.get("/jobs/plan/").status_code == 405


def test_it_checks_csrf_on_posts(alice, job):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    assert client.post(f"/jobs/{job.pk}/cancel/").status_code == 403
    assert client.post("/jobs/", {"model": "org/name"}).status_code == 403


def test_the_plan_preview_requires_login(client, db):
    response = client.post("/jobs/plan/", {"model": "org/name"})
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_it_rejects_post_to_read_only_pages(alice_client, entry, job):
    for path in ["/models/", f"/models/{entry.pk}/", "/jobs/new/", f"/jobs/{job.pk}/"]:
        assert alice_client.post(path).status_code == 405, path


def test_unknown_ids_are_404(alice_client, hive):
    assert alice_client.get("/models/999/").status_code == 404
    assert alice_client.get("/jobs/999/").status_code == 404


# -- Django writes the URLs, query strings and fields -------------------------------------

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"
LITERAL_PATH = re.compile(r"""(?:href|action|src|hx-\w+|ws-connect)=["'](?:/|\?)""")


def test_no_template_spells_an_internal_path_or_a_query_string():
    for template in TEMPLATES_DIR.rglob("*.html"):
        text = template.read_text()
        assert not LITERAL_PATH.search(text), f"{template.relative_to(TEMPLATES_DIR)}: {LITERAL_PATH.search(text)}"
        for path in ("/models/", "/jobs/", "/admin/", "/accounts/", "/ws/", "/static/"):
            assert path not in text, f"{template.relative_to(TEMPLATES_DIR)} spells {path}"


def test_the_pages_load_htmx_and_its_ws_extension_from_static_files(alice_client, hive):
    body = alice_client.get("/jobs/").content.decode()
    assert '<script src="/static/django_htmx/htmx-2.min.js" defer></script>' in body
    assert '<script src="/static/django_htmx/ext/hx-ws-2.min.js" defer></script>' in body
    assert 'ws-connect="/ws/jobs/"' in body


def test_catalog_links_keep_the_filters_url_encoded(alice_client, entry, hive):
    odd = Hive.objects.create(name="gpu&2")
    ModelEntry.objects.create(hive=odd, reference="hf:a/b", name="a b", vendor="hugging&face", path="/x", size_bytes=1)
    body = alice_client.get("/models/", {"q": "a b", "vendor": "hugging&face", "hive": "gpu&2"}).content.decode()
    assert "vendor=hugging%26face" in body and "hive=gpu%262" in body and "q=a+b" in body
    assert "sort=name" in body


def test_the_download_form_is_rendered_from_its_fields_with_hives_by_name(alice_client, hive):
    Hive.objects.create(name="gpu-2")
    body = alice_client.get("/jobs/new/").content.decode()
    assert 'name="model"' in body and 'maxlength="512"' in body
    assert '<input type="checkbox" name="hives" value="local" id="id_hives_1" checked>\n local</label>' in body
    assert '<input type="checkbox" name="hives" value="gpu-2" id="id_hives_0">\n gpu-2 (offline)</label>' in body
    assert '<button type="submit" name="all_online" value="1">' in body


def test_the_download_form_and_the_api_both_name_the_hive(alice_client, hive):
    other = Hive.objects.create(name="gpu-2")
    alice_client.post("/jobs/", {"model": "org/one", "hive": "gpu-2"})
    assert DownloadJob.objects.get(reference="hf:org/one").hive == other
    response = alice_client.post("/jobs/", {"model": "org/two", "hive": "nowhere"})
    assert response.status_code == 400 and "unknown hive" in response.content.decode()
    assert not DownloadJob.objects.filter(reference="hf:org/two").exists()


# -- the plan preview makes the server fetch: only a CSRF-checked POST may ask -----------


def test_a_get_of_the_plan_preview_is_refused_and_fetches_nothing(alice_client, hub, hive):
    hub.add_repo("acme/lure", {"config.json": b"{}"})
    response = alice_client.get("/jobs/plan/", {"model": "acme/lure"})
    assert response.status_code == 405
    assert hub.requests == []


def test_a_plan_preview_post_without_the_csrf_token_is_refused(alice, hub, hive):
    from django.test import Client

    hub.add_repo("acme/lure", {"config.json": b"{}"})
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    assert client.post("/jobs/plan/", {"model": "acme/lure"}).status_code == 403
    assert hub.requests == []


def test_the_download_form_asks_for_its_preview_by_post(alice_client, hive):
    body = alice_client.get("/jobs/new/").content.decode()
    # The preview makes the server contact a host the admin typed; only the Hub search, which asks
    # the configured endpoints alone, is a GET.
    assert 'hx-post="/jobs/plan/"' in body and 'hx-get="/jobs/plan/"' not in body
    assert [url for url in re.findall(r'hx-get="([^"]+)"', body)] == ["/jobs/search/"]

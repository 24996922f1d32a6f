"""The Django admin: catalog edits, read-only history, hives, API tokens."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client

from accounts.models import ApiToken
from catalog.models import ModelEntry, ModelFile
from provisioner.models import DownloadJob
from provisioner.narration import narrate


@pytest.fixture
def root_client(db) -> Client:
    """Root is the superuser created on first start."""
    client = Client()
    client.force_login(User.objects.create_superuser("root", "", "pw"))
    return client


def test_it_edits_name_notes_and_tags_but_not_the_files(root_client, hive):
    entry = ModelEntry.objects.create(hive=hive, reference="hf:a/b", name="a/b", vendor="huggingface", path="/x")
    ModelFile.objects.create(entry=entry, path="w.bin", size_bytes=1, sha256="e" * 64)
    page = root_client.get(f"/admin/catalog/modelentry/{entry.pk}/change/").content.decode()
    assert "w.bin" in page and "e" * 64 in page
    response = root_client.post(
        f"/admin/catalog/modelentry/{entry.pk}/change/",
        {"name": "Nice name", "notes": "for the chat team", "tags": "chat, small", "files-TOTAL_FORMS": "1",
         "files-INITIAL_FORMS": "1", "files-MIN_NUM_FORMS": "0", "files-MAX_NUM_FORMS": "1000",
         "files-0-id": ModelFile.objects.get().pk, "files-0-entry": entry.pk, "path": "/etc"},
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    entry.refresh_from_db()
    assert (entry.name, entry.notes, entry.tag_list, entry.path) == ("Nice name", "for the chat team", ["chat", "small"], "/x")


def test_jobs_show_their_events_read_only(root_client, hive):
    job = DownloadJob.objects.create(reference="hf:a/b", hive=hive)
    narrate(job, "model_download_queued", "Queued for the test")
    page = root_client.get(f"/admin/provisioner/downloadjob/{job.pk}/change/").content.decode()
    assert "Queued for the test" in page
    assert 'name="_save"' not in page


def test_an_api_token_is_shown_once_and_stored_hashed(root_client):
    user = User.objects.get(username="root")
    response = root_client.post("/admin/accounts/apitoken/add/", {"name": "ci", "user": user.pk}, follow=True)
    body = response.content.decode()
    token = ApiToken.objects.get()
    raw = body.split("copy it now): ")[1].split("<")[0].strip()
    assert raw.startswith("rbee_") and token.token_hash != raw and raw not in token.token_hash
    assert ApiToken.authenticate(raw) == token


@pytest.mark.parametrize("model", ["hive", "modelentry"])
def test_catalog_admin_pages_render(root_client, hive, model):
    assert root_client.get(f"/admin/catalog/{model}/").status_code == 200


@pytest.mark.parametrize("model", ["downloadjob", "narrationevent"])
def test_provisioner_admin_pages_render(root_client, model):
    assert root_client.get(f"/admin/provisioner/{model}/").status_code == 200

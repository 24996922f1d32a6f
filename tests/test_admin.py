"""The Django admin: catalog edits, read-only history, hives, API tokens."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.test import Client

from accounts.models import ApiToken
from catalog.models import ModelEntry, ModelFile
from provisioner.models import Action, DownloadJob, NarrationEvent


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
    job.narrate(Action.QUEUED, "Queued for the test")
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


def _entry_on_disk(hive, settings, name: str) -> ModelEntry:
    folder = settings.RBEE_MODELS_DIR / "huggingface" / "acme" / name
    folder.mkdir(parents=True)
    (folder / "w.bin").write_bytes(b"weights")
    entry = ModelEntry.objects.create(
        hive=hive, reference=f"hf:acme/{name}", name=f"acme/{name}", vendor="huggingface", path=str(folder),
        models_root=str(settings.RBEE_MODELS_DIR),
    )
    ModelFile.objects.create(entry=entry, path="w.bin", size_bytes=7)
    return entry


def test_deleting_an_entry_in_the_admin_removes_its_files(root_client, hive, settings):
    """Found broken: the entry went, its bytes stayed on disk, uncounted."""
    entry = _entry_on_disk(hive, settings, "one")
    response = root_client.post(f"/admin/catalog/modelentry/{entry.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not ModelEntry.objects.exists()
    assert not Path(entry.path).exists()


def test_the_bulk_delete_action_removes_every_entrys_files(root_client, hive, settings):
    entries = [_entry_on_disk(hive, settings, name) for name in ("a", "b", "c")]
    response = root_client.post(
        "/admin/catalog/modelentry/",
        {"action": "delete_selected", "post": "yes", "_selected_action": [e.pk for e in entries]},
    )
    assert response.status_code == 302
    assert not ModelEntry.objects.exists()
    assert not (settings.RBEE_MODELS_DIR / "huggingface" / "acme").exists()
    deleted = NarrationEvent.objects.filter(action=Action.DELETE).values_list("target", flat=True)
    assert sorted(deleted) == [e.reference for e in entries]

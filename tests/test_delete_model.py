"""Deleting an entry removes its files and the entry, and is narrated."""

from __future__ import annotations

from pathlib import Path

from catalog.models import ModelEntry
from provisioner.models import NarrationEvent
from tests.helpers import download


def _entry(hub, hive):
    hub.add_repo("acme/delete-me", {"config.json": b"{}", "model.safetensors": b"w" * 3000})
    return download("acme/delete-me", hive).entry


def test_it_requires_login(client, hive):
    entry = ModelEntry.objects.create(hive=hive, reference="hf:a/b", name="a/b", vendor="x", path="/nowhere")
    assert client.post(f"/models/{entry.pk}/delete/").status_code == 302
    assert ModelEntry.objects.filter(pk=entry.pk).exists()


def test_it_rejects_put(alice_client, hive):
    entry = ModelEntry.objects.create(hive=hive, reference="hf:a/b", name="a/b", vendor="x", path="/nowhere")
    assert alice_client.put(f"/models/{entry.pk}/delete/").status_code == 405


def test_get_asks_for_confirmation_and_deletes_nothing(alice_client, hub, hive):
    entry = _entry(hub, hive)
    body = alice_client.get(f"/models/{entry.pk}/delete/").content.decode()
    assert "Delete acme/delete-me?" in body and 'method="post"' in body
    assert Path(entry.path).is_dir()


def test_it_deletes_files_then_the_entry_and_narrates(alice_client, hub, hive, settings):
    entry = _entry(hub, hive)
    folder = Path(entry.path)
    response = alice_client.post(f"/models/{entry.pk}/delete/")
    assert response.status_code == 303 and response["Location"] == "/models/"
    assert not folder.exists()
    assert not (settings.RBEE_MODELS_DIR / "huggingface" / "acme").exists()
    assert settings.RBEE_MODELS_DIR.exists()
    assert not ModelEntry.objects.exists()
    event = NarrationEvent.objects.get(action="model_delete")
    assert event.job.reference == "hf:acme/delete-me"
    assert "deleted" in event.human and "alice" in event.human


def test_htmx_delete_redirects_the_client(alice_client, hub, hive):
    entry = _entry(hub, hive)
    response = alice_client.post(f"/models/{entry.pk}/delete/", headers={"HX-Request": "true"})
    assert response["HX-Redirect"] == "/models/"


def test_it_never_deletes_outside_the_models_dir(alice_client, hive, tmp_path):
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    entry = ModelEntry.objects.create(hive=hive, reference="hf:a/b", name="a/b", vendor="x", path=str(outside))
    response = alice_client.post(f"/models/{entry.pk}/delete/", follow=True)
    assert (outside / "keep.txt").exists()
    assert ModelEntry.objects.filter(pk=entry.pk).exists()
    assert "Could not delete" in response.content.decode()


def test_an_entry_no_job_brought_is_narrated_without_a_job(alice_client, hive, settings):
    folder = settings.RBEE_MODELS_DIR / "local" / "x"
    folder.mkdir(parents=True)
    entry = ModelEntry.objects.create(hive=hive, reference="file:/x", name="x", vendor="local", path=str(folder))
    alice_client.post(f"/models/{entry.pk}/delete/")
    event = NarrationEvent.objects.get(action="model_delete")
    assert event.job is None and event.fields["path"] == str(folder)

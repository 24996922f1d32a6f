"""The catalog says what is on the disk: found broken, an entry whose folder vanished stayed
"ready" until a restart and could not be downloaded again ("already exists"); an entry's
delete broke once RBEE_MODELS_DIR moved."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from catalog.models import ModelEntry
from provisioner.models import Action, DownloadJob
from tests.helpers import actions, blob, download
from tests.servers.faults import FaultServer

WEIGHTS = blob(256 * 1024 + 1, seed=90)


@pytest.fixture
def files():
    with FaultServer() as server:
        server.add_file("m/model.gguf", WEIGHTS)
        yield server


def test_an_entry_whose_files_vanished_shows_missing_when_viewed(alice_client, hive, files):
    job = download(files.url_for("m/model.gguf"), hive)
    entry = job.entry
    shutil.rmtree(entry.path)

    page = alice_client.get(f"/models/{entry.pk}/").content.decode()

    entry.refresh_from_db()
    assert entry.status == ModelEntry.STATUS_MISSING
    assert "missing" in page
    listed = alice_client.get("/models/").content.decode()
    assert "missing" in listed


def test_a_missing_entry_is_downloaded_again_into_the_same_entry(hive, files):
    first = download(files.url_for("m/model.gguf"), hive)
    entry = first.entry
    (Path(entry.path) / "model.gguf").unlink()  # a file removed by hand

    again = download(files.url_for("m/model.gguf"), hive)

    assert again.state == DownloadJob.SUCCEEDED, again.error
    assert Action.EXISTS not in actions(again) and Action.COMPLETE in actions(again)
    assert again.entry_id == entry.pk
    entry.refresh_from_db()
    assert entry.status == ModelEntry.STATUS_READY
    assert (Path(entry.path) / "model.gguf").read_bytes() == WEIGHTS
    assert ModelEntry.objects.count() == 1


def test_a_delete_still_works_after_the_models_dir_moved(alice_client, hive, files, settings, tmp_path):
    job = download(files.url_for("m/model.gguf"), hive)
    old_path = Path(job.entry.path)
    settings.RBEE_MODELS_DIR = tmp_path / "elsewhere"
    hive.models_dir = str(settings.RBEE_MODELS_DIR)
    hive.save(update_fields=["models_dir"])

    response = alice_client.post(f"/models/{job.entry.pk}/delete/")

    assert response.status_code == 303
    assert not old_path.exists()
    assert not ModelEntry.objects.exists()

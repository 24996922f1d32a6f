"""Catalog entries and hives through the JSON API: find, read, delete; disks and queues."""

from __future__ import annotations

import pytest

from accounts.models import ApiToken
from catalog.models import Hive, ModelEntry, ModelFile
from provisioner.models import DownloadJob


@pytest.fixture
def bearer(alice) -> dict[str, str]:
    _, raw = ApiToken.issue(alice, "ci")
    return {"Authorization": f"Bearer {raw}"}


def _entry(hive, settings, reference: str, name: str, vendor: str = "huggingface", **kwargs) -> ModelEntry:
    folder = settings.RBEE_MODELS_DIR / vendor / name
    folder.mkdir(parents=True)
    (folder / "model.bin").write_bytes(b"w" * 10)
    entry = ModelEntry.objects.create(
        hive=hive, reference=reference, name=name, vendor=vendor, path=str(folder), size_bytes=10, file_count=1, **kwargs
    )
    ModelFile.objects.create(entry=entry, path="model.bin", size_bytes=10, sha256="a" * 64)
    return entry


@pytest.mark.parametrize("method", ["post", "put"])
def test_it_rejects_other_methods(client, bearer, hive, settings, method):
    entry = _entry(hive, settings, "hf:a/one", "a/one")
    for path in ["/api/models/", f"/api/models/{entry.pk}/"]:
        response = getattr(client, method)(path, headers=bearer)
        assert response.status_code == 405 and "error" in response.json()


def test_it_finds_an_entry_by_any_spelling_of_its_reference(client, bearer, hive, settings):
    entry = _entry(hive, settings, "hf:acme/exact", "acme/exact")
    _entry(hive, settings, "hf:acme/exact-GGUF", "acme/exact-GGUF")
    for spelling in ["acme/exact", "hf:acme/exact", " hf:acme/exact "]:
        found = client.get("/api/models/", {"reference": spelling}, headers=bearer).json()["models"]
        assert [m["id"] for m in found] == [entry.pk], spelling
    assert client.get("/api/models/?reference=not+a+reference", headers=bearer).json()["models"] == []


def test_it_filters_by_hive_vendor_and_words(client, bearer, hive, settings):
    other = Hive.objects.create(name="gpu-1", models_dir=str(settings.RBEE_MODELS_DIR))
    _entry(hive, settings, "hf:a/llama", "a/llama", tags="chat")
    _entry(other, settings, "ollama:library/qwen:latest", "qwen", vendor="ollama")

    def names(query: str) -> list[str]:
        return [m["name"] for m in client.get(f"/api/models/{query}", headers=bearer).json()["models"]]

    assert names("?hive=gpu-1") == ["qwen"]
    assert names("?vendor=huggingface") == ["a/llama"]
    assert names("?q=chat") == ["a/llama"]
    assert names("?q=chat&hive=gpu-1") == []


def test_an_entry_keeps_its_fields_and_lists_its_files(client, bearer, hive, settings):
    entry = _entry(hive, settings, "hf:a/one", "a/one", tags="x, y")
    listed = client.get("/api/models/", headers=bearer).json()["models"][0]
    assert "files" not in listed
    detail = client.get(f"/api/models/{entry.pk}/", headers=bearer).json()
    assert {k: v for k, v in detail.items() if k not in ("files", "metadata", "engines")} == listed
    assert set(listed) == {
        "id", "reference", "name", "vendor", "hive", "revision", "path", "size_bytes", "file_count", "status",
        "linked", "tags", "notes", "created_at", "url", "pinned", "last_used_at", "integrity", "damaged_files",
        "verified_at", "bytes_on_disk", "update_available", "update_revision", "update_changes",
        "update_checked_at", "previous_revision",
    }  # fmt: skip
    assert listed["tags"] == ["x", "y"] and listed["hive"] == "local"
    assert detail["files"] == [{"path": "model.bin", "size_bytes": 10, "sha256": "a" * 64, "media_type": ""}]


def test_delete_removes_the_files_and_the_entry_and_says_so(client, bearer, hive, settings):
    entry = _entry(hive, settings, "hf:a/gone", "a/gone")
    job = DownloadJob.objects.create(reference="hf:a/gone", hive=hive, state=DownloadJob.SUCCEEDED, entry=entry)
    response = client.delete(f"/api/models/{entry.pk}/", headers=bearer)
    assert response.status_code == 204 and response.content == b""
    assert not ModelEntry.objects.exists()
    assert not (settings.RBEE_MODELS_DIR / "huggingface" / "a" / "gone").exists()
    event = job.events.get()
    assert event.action == "model_delete" and "by alice" in event.human
    assert client.delete(f"/api/models/{entry.pk}/", headers=bearer).status_code == 404


def test_delete_keeps_the_entry_when_its_files_cannot_go(client, bearer, hive, settings, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    entry = ModelEntry.objects.create(hive=hive, reference="hf:a/out", name="a/out", vendor="huggingface", path=str(outside))
    response = client.delete(f"/api/models/{entry.pk}/", headers=bearer)
    assert response.status_code == 409
    assert response.json()["error"].startswith("could not delete the files of a/out")
    assert ModelEntry.objects.filter(pk=entry.pk).exists() and outside.exists()


def test_delete_needs_staff_and_csrf(bob_client, alice, hive, settings):
    from django.test import Client

    entry = _entry(hive, settings, "hf:a/kept", "a/kept")
    assert bob_client.delete(f"/api/models/{entry.pk}/").status_code == 403
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    assert client.delete(f"/api/models/{entry.pk}/").status_code == 403
    assert ModelEntry.objects.filter(pk=entry.pk).exists()


def test_hives_report_disk_catalog_and_queues(client, bearer, hive, settings):
    gpu = Hive.objects.create(name="gpu-1", models_dir="/srv/models", disk_total=1000, disk_free=400)
    _entry(hive, settings, "hf:a/one", "a/one")
    DownloadJob.objects.create(reference="hf:a/q1", hive=gpu)
    DownloadJob.objects.create(reference="hf:a/q2", hive=gpu)
    DownloadJob.objects.create(reference="hf:a/r", hive=gpu, state=DownloadJob.RUNNING)
    DownloadJob.objects.create(reference="hf:a/done", hive=gpu, state=DownloadJob.SUCCEEDED)

    hives = {h["name"]: h for h in client.get("/api/hives/", headers=bearer).json()["hives"]}
    assert hives["gpu-1"] | {"max_concurrent_downloads": None} == {
        "name": "gpu-1",
        "online": False,
        "models_dir": "/srv/models",
        "disk_total": 1000,
        "disk_free": 400,
        "catalog_bytes": 0,
        "active_jobs": 3,
        "running_jobs": 1,
        "queued_jobs": 2,
        "paused_jobs": 0,
        "last_heartbeat": None,
        "max_bytes_per_s": None,
        "max_concurrent_downloads": None,
        "download_window": "",
        "window_open": True,
        "high_watermark_percent": 90,
        "low_watermark_percent": 80,
        "partial_bytes": None,
        "dedupe_saved_bytes": None,
        "largest": [],
        "least_recently_used": [],
    }
    local = client.get("/api/hives/local/", headers=bearer).json()
    assert local["online"] is True and local["catalog_bytes"] == 10
    assert local["disk_total"] > local["disk_free"] > 0
    assert local["models_dir"] == str(settings.RBEE_MODELS_DIR)
    missing = client.get("/api/hives/nowhere/", headers=bearer)
    assert missing.status_code == 404 and missing.json() == {"error": "no hive 'nowhere'"}

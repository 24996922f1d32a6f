"""POST /api/hives/<name>/ensure/: what rbee calls before it spawns a worker."""

from __future__ import annotations

from pathlib import Path

from catalog.models import ModelEntry
from provisioner.models import DownloadJob
from tests.helpers import blob, sha256, wait_finished


def _ensure(client, model, hive="local"):
    return client.post(f"/api/hives/{hive}/ensure/", {"model": model}, content_type="application/json")


def test_it_requires_login(client, db):
    assert _ensure(client, "acme/x").status_code == 401


def test_it_rejects_get(alice_client, hive):
    assert alice_client.get("/api/hives/local/ensure/").status_code == 405


def test_it_provisions_then_answers_ready_with_the_path(alice_client, hive, hub):
    weights = blob(200_000, seed=7)
    hub.add_repo("acme/ensured", {"model.safetensors": weights, "config.json": b"{}"})

    first = _ensure(alice_client, "acme/ensured")
    assert first.status_code == 202, first.content
    body = first.json()
    assert body["state"] == "provisioning" and body["job"]["reference"] == "hf:acme/ensured"
    job = DownloadJob.objects.get(pk=body["job"]["id"])
    again = _ensure(alice_client, "hf:acme/ensured")
    if again.status_code == 202:  # still downloading: the same job, not a second one
        assert again.json()["job"]["id"] == job.pk
    assert wait_finished(job).state == DownloadJob.SUCCEEDED

    ready = _ensure(alice_client, "acme/ensured")
    assert ready.status_code == 200, ready.content
    entry = ready.json()["entry"]
    assert ready.json()["state"] == "ready" and entry["reference"] == "hf:acme/ensured"
    assert Path(entry["path"]).is_relative_to(hive.path)
    files = {f["path"]: f for f in entry["files"]}
    assert files["model.safetensors"] == {"path": "model.safetensors", "size": len(weights), "sha256": sha256(weights)}
    assert (Path(entry["path"]) / "model.safetensors").read_bytes() == weights
    assert ModelEntry.objects.get(pk=entry["id"]).last_used_at is not None
    assert DownloadJob.objects.filter(reference="hf:acme/ensured").count() == 1


def test_it_refuses_an_unknown_hive(alice_client, hive):
    response = _ensure(alice_client, "acme/x", hive="nowhere")
    assert response.status_code == 404 and "nowhere" in response.json()["error"]


def test_it_refuses_an_unsupported_reference(alice_client, hive):
    response = _ensure(alice_client, "ftp://example.com/x.bin")
    assert response.status_code == 400 and "model" in response.json()["fields"]
    assert not DownloadJob.objects.exists()


def test_it_refuses_a_model_that_cannot_fit(alice_client, hive, hub, settings):
    hub.add_repo("acme/huge", {"model.safetensors": b"x"}, claimed_sizes={"model.safetensors": 10**15})
    response = _ensure(alice_client, "acme/huge")
    assert response.status_code == 400 and "Does not fit" in response.json()["error"]
    assert not DownloadJob.objects.exists()


def test_it_refuses_a_missing_repo(alice_client, hive, hub):
    response = _ensure(alice_client, "acme/not-there")
    assert response.status_code == 400
    assert not DownloadJob.objects.exists()

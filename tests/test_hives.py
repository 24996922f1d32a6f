"""Hives: online state, and where a job goes when the admin names none."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from catalog.models import Hive


def test_the_embedded_default_sends_jobs_to_the_local_hive(db):
    Hive.objects.create(name="alpha", last_heartbeat=timezone.now())
    assert Hive.default().name == "local"
    assert Hive.current().is_online()


def test_scaled_jobs_go_to_an_online_hive(db, settings):
    settings.RBEE_SCALED = True
    Hive.objects.create(name="alpha", last_heartbeat=timezone.now() - timedelta(hours=1))
    Hive.objects.create(name="beta", last_heartbeat=timezone.now())
    assert Hive.default().name == "beta"
    assert not Hive.objects.get(name="alpha").is_online()


def test_scaled_with_every_hive_offline_the_job_still_has_a_hive_to_wait_for(db, settings):
    settings.RBEE_SCALED = True
    Hive.objects.create(name="alpha")
    assert Hive.default().name == "alpha"


def test_the_api_says_whether_the_jobs_hive_is_online(alice_client, settings):
    settings.RBEE_SCALED = True
    Hive.objects.create(name="gamma")
    response = alice_client.post("/api/jobs/", {"model": "acme/x", "hive": "gamma"}, content_type="application/json")
    [body] = response.json()["jobs"]
    assert body["hive"] == "gamma" and body["hive_online"] is False and body["state"] == "queued"
    page = alice_client.get(body["url"]).content.decode()
    assert "hive gamma is offline" in page


def test_the_embedded_worker_follows_rbee_models_dir(transactional_db, settings, tmp_path):
    from provisioner.worker import start_embedded_worker

    Hive.objects.create(name="local", models_dir="/old/place")
    settings.RBEE_MODELS_DIR = tmp_path / "new-place"
    heartbeat = start_embedded_worker()
    assert heartbeat is not None
    heartbeat.stop()
    assert Hive.objects.get(name="local").models_dir == str((tmp_path / "new-place").resolve())

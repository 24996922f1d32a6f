"""The download form: works without JavaScript (redirect after POST) and with htmx."""

from __future__ import annotations

from provisioner.models import DownloadJob
from tests.helpers import wait_finished


def test_it_requires_login(client, hive):
    assert client.post("/jobs/", {"model": "a/b"}).status_code == 302
    assert not DownloadJob.objects.exists()


def test_it_rejects_put(alice_client, hive):
    assert alice_client.put("/jobs/").status_code == 405
    assert alice_client.post("/jobs/new/").status_code == 405


def test_it_queues_and_redirects_to_the_job(alice_client, hive, settings):
    settings.HF_ENDPOINT = "http://127.0.0.1:9"
    response = alice_client.post("/jobs/", {"model": "hf:acme/form"})
    job = DownloadJob.objects.get()
    assert response.status_code == 303
    assert response["Location"] == f"/jobs/{job.pk}/"
    assert job.reference == "hf:acme/form" and job.requested_by.username == "alice"
    wait_finished(job)


def test_htmx_gets_a_client_redirect(alice_client, hive, settings):
    settings.HF_ENDPOINT = "http://127.0.0.1:9"
    response = alice_client.post("/jobs/", {"model": "acme/htmx"}, headers={"HX-Request": "true"})
    job = DownloadJob.objects.get()
    assert response.status_code == 200
    assert response["HX-Redirect"] == f"/jobs/{job.pk}/"
    wait_finished(job)


def test_an_unsupported_reference_is_refused_with_the_forms(alice_client, hive):
    response = alice_client.post("/jobs/", {"model": "just-a-word"})
    body = response.content.decode()
    assert response.status_code == 400
    assert "No vendor supports" in body and "Supported forms" in body
    assert "<html" in body
    assert not DownloadJob.objects.exists()


def test_htmx_errors_come_back_as_the_form_fragment(alice_client, hive):
    response = alice_client.post("/jobs/", {"model": ""}, headers={"HX-Request": "true"})
    body = response.content.decode()
    assert response.status_code == 400
    assert 'id="download-form"' in body and "<html" not in body
    assert "required" in body


def test_a_repeated_request_lands_on_the_running_job(alice_client, hive):
    first = DownloadJob.objects.create(reference="hf:acme/again", hive=hive, state=DownloadJob.RUNNING)
    response = alice_client.post("/jobs/", {"model": "acme/again"}, follow=True)
    assert response.redirect_chain[-1][0] == f"/jobs/{first.pk}/"
    assert "already being downloaded" in response.content.decode()


def test_the_form_prefills_from_the_query(alice_client, hive):
    body = alice_client.get("/jobs/new/?model=acme/x:Q4_K_M").content.decode()
    assert 'value="acme/x:Q4_K_M"' in body


def test_the_runtime_check_narrates_unsupported(hive, settings):
    """A job queued with a reference no vendor takes (as the seed narrated it)."""
    job = DownloadJob.objects.create(reference="gopher://old/thing", hive=hive)
    job.enqueue()
    job = wait_finished(job)
    assert job.state == DownloadJob.FAILED and job.error_kind == "unsupported"
    assert job.events.last().action == "model_download_unsupported"
    assert "Supported forms" in job.error


def test_download_after_a_preview_fetches_exactly_the_previewed_revision(alice_client, hub, hive):
    first = hub.add_repo("acme/moving", {"config.json": b'{"v": 1}'})
    preview = alice_client.post("/jobs/plan/", {"model": "acme/moving"}).content.decode()
    assert first[:12] in preview
    hub.add_commit("acme/moving", {"config.json": b'{"v": 2}'})  # main moves on meanwhile

    alice_client.post("/jobs/", {"model": "acme/moving"})
    job = wait_finished(DownloadJob.objects.get())
    assert job.state == DownloadJob.SUCCEEDED, job.error
    assert job.revision == job.entry.revision == first
    from pathlib import Path

    assert (Path(job.entry.path) / "config.json").read_bytes() == b'{"v": 1}'


def test_without_a_preview_the_job_plans_for_itself(alice_client, hub, hive):
    hub.add_repo("acme/moving", {"config.json": b'{"v": 1}'})
    latest = hub.add_commit("acme/moving", {"config.json": b'{"v": 2}'})
    alice_client.post("/jobs/", {"model": "acme/moving"})
    job = wait_finished(DownloadJob.objects.get())
    assert job.revision == latest


# -- several hives at once ----------------------------------------------------------------


def test_it_places_the_model_on_every_hive_ticked_and_shows_the_job_list(alice_client, hive):
    from datetime import timedelta

    from django.utils import timezone

    from catalog.models import Hive

    Hive.objects.create(name="gpu-1", last_heartbeat=timezone.now() - timedelta(hours=1))
    Hive.objects.create(name="gpu-2")
    response = alice_client.post("/jobs/", {"model": "acme/many", "hives": ["gpu-1", "gpu-2"]})
    assert response.status_code == 303 and response["Location"] == "/jobs/"
    assert sorted(DownloadJob.objects.values_list("hive__name", flat=True)) == ["gpu-1", "gpu-2"]
    again = alice_client.post("/jobs/", {"model": "acme/many", "hives": ["gpu-1", "gpu-2"]}, follow=True)
    assert "Queued on 0 of 2 hives" in again.content.decode()
    assert DownloadJob.objects.count() == 2


def test_all_online_hives_is_one_click(alice_client, hive, settings):
    from datetime import timedelta

    from django.utils import timezone

    from catalog.models import Hive

    settings.RBEE_SCALED = True
    Hive.objects.create(name="gpu-1", last_heartbeat=timezone.now())
    Hive.objects.create(name="gpu-2", last_heartbeat=timezone.now())
    Hive.objects.create(name="gpu-3", last_heartbeat=timezone.now() - timedelta(hours=1))  # offline: left out
    response = alice_client.post("/jobs/", {"model": "acme/everywhere", "all_online": "1"}, headers={"HX-Request": "true"})
    assert response["HX-Redirect"] == "/jobs/"
    assert sorted(DownloadJob.objects.values_list("hive__name", flat=True)) == ["gpu-1", "gpu-2"]


def test_one_hive_ticked_goes_to_its_job(alice_client, hive):
    from catalog.models import Hive

    Hive.objects.create(name="gpu-1")
    response = alice_client.post("/jobs/", {"model": "acme/one", "hives": ["gpu-1"]})
    job = DownloadJob.objects.get()
    assert job.hive.name == "gpu-1" and response["Location"] == f"/jobs/{job.pk}/"


def test_an_unknown_hive_among_those_ticked_creates_nothing(alice_client, hive):
    response = alice_client.post("/jobs/", {"model": "acme/none", "hives": ["local", "nowhere"]})
    assert response.status_code == 400 and "unknown hive" in response.content.decode()
    assert not DownloadJob.objects.exists()

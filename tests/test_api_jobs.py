"""Jobs through the JSON API: create on one or many hives, list, cancel, retry."""

from __future__ import annotations

import pytest

from accounts.models import ApiToken
from catalog.models import Hive
from provisioner.models import DownloadJob
from tests.helpers import wait_finished


@pytest.fixture
def bearer(alice) -> dict[str, str]:
    _, raw = ApiToken.issue(alice, "ci")
    return {"Authorization": f"Bearer {raw}"}


@pytest.fixture
def gpus(hive) -> list[Hive]:
    """Two more hives whose workers are not running: their jobs stay queued."""
    return [Hive.objects.create(name="gpu-1"), Hive.objects.create(name="gpu-2")]


def _post(client, body, bearer):
    return client.post("/api/jobs/", body, content_type="application/json", headers=bearer)


@pytest.mark.parametrize("method", ["put", "patch", "delete"])
def test_it_rejects_other_methods(client, bearer, hive, method):
    response = getattr(client, method)("/api/jobs/", headers=bearer)
    assert response.status_code == 405
    assert response.json() == {"error": f"{method.upper()} is not allowed here"}
    assert set(response["Allow"].replace(" ", "").split(",")) == {"GET", "POST"}


@pytest.mark.parametrize("path", ["/api/jobs/1/cancel/", "/api/jobs/1/retry/", "/api/hives/", "/api/hives/local/"])
def test_it_requires_login(client, db, path):
    response = client.post(path) if path.endswith(("cancel/", "retry/")) else client.get(path)
    assert response.status_code == 401
    assert response.json() == {"error": "authentication required"}


def test_it_places_one_job_per_named_hive(client, bearer, gpus):
    response = _post(client, {"model": "acme/fleet", "hives": ["gpu-1", "gpu-2"]}, bearer)
    assert response.status_code == 201
    jobs = response.json()["jobs"]
    assert [(j["hive"], j["reference"], j["state"]) for j in jobs] == [
        ("gpu-1", "hf:acme/fleet", "queued"),
        ("gpu-2", "hf:acme/fleet", "queued"),
    ]
    assert jobs[0]["hive_online"] is False
    assert DownloadJob.objects.count() == 2


def test_an_active_job_is_returned_instead_of_a_second_one(client, bearer, gpus):
    first = DownloadJob.objects.create(reference="hf:acme/fleet", hive=gpus[0])
    response = _post(client, {"model": "hf:acme/fleet", "hives": ["gpu-1", "gpu-2"]}, bearer)
    assert response.status_code == 201
    jobs = response.json()["jobs"]
    assert jobs[0]["id"] == first.pk and jobs[1]["id"] != first.pk

    again = _post(client, {"model": "acme/fleet", "hives": ["gpu-2", "gpu-1"]}, bearer)
    assert again.status_code == 200
    assert [j["id"] for j in again.json()["jobs"]] == [jobs[1]["id"], first.pk]
    assert DownloadJob.objects.count() == 2


def test_a_single_hive_by_name(client, bearer, gpus):
    response = _post(client, {"model": "ollama:llama3.2:1b", "hive": "gpu-2"}, bearer)
    assert response.status_code == 201
    [job] = response.json()["jobs"]
    assert (job["hive"], job["reference"]) == ("gpu-2", "ollama:library/llama3.2:1b")


def test_no_hive_means_the_default_hive(client, bearer, gpus, settings):
    settings.HF_ENDPOINT = "http://127.0.0.1:9"
    response = _post(client, {"model": "acme/where"}, bearer)
    [job] = response.json()["jobs"]
    assert job["hive"] == Hive.default().name == "local"
    wait_finished(DownloadJob.objects.get(pk=job["id"]))


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"model": "a/b", "hives": ["gpu-1", "nowhere"]}, "hives", "unknown hive 'nowhere'"),
        ({"model": "a/b", "hive": "nowhere"}, "hive", "unknown hive 'nowhere'"),
        ({"model": "a/b", "hives": []}, "hives", "at least one hive"),
        ({"model": "a/b", "hive": "gpu-1", "hives": ["gpu-2"]}, "hives", "not both"),
        ({"model": "not a model", "hives": ["gpu-1"]}, "model", "Supported forms"),
        ({"model": "", "hives": ["gpu-1"]}, "model", "required"),
        ({"hives": ["gpu-1"]}, "model", "required"),
        ({"model": 7}, "model", "string"),
        ({"model": "a/b", "hives": "gpu-1"}, "hives", "list"),
    ],
)
def test_bad_input_creates_nothing_and_says_which_field(client, bearer, gpus, body, field, words):
    response = _post(client, body, bearer)
    assert response.status_code == 400
    error = response.json()
    assert set(error) == {"error", "fields"}
    assert words in " ".join(error["fields"][field]) and words in error["error"]
    assert not DownloadJob.objects.exists()


def test_a_body_that_is_not_json_is_refused_in_the_same_shape(client, bearer, hive):
    response = client.post("/api/jobs/", "{nope", content_type="application/json", headers=bearer)
    assert response.status_code == 400
    assert response.json() == {"error": "the body must be JSON"}


def test_a_body_too_large_is_refused_with_413(client, bearer, hive, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    body = '{"model": "' + "a" * 2000 + '"}'
    response = client.post("/api/jobs/", body, content_type="application/json", headers=bearer)
    assert response.status_code == 413
    assert response.json() == {"error": "the request body is larger than 1000 bytes"}
    assert not DownloadJob.objects.exists()


def test_the_list_filters_by_state_and_hive(client, bearer, gpus):
    queued = DownloadJob.objects.create(reference="hf:a/q", hive=gpus[0])
    failed = DownloadJob.objects.create(reference="hf:a/f", hive=gpus[1], state=DownloadJob.FAILED)

    def ids(query: str) -> list[int]:
        return [j["id"] for j in client.get(f"/api/jobs/{query}", headers=bearer).json()["jobs"]]

    assert ids("") == [failed.pk, queued.pk]
    assert ids("?state=failed") == [failed.pk]
    assert ids("?hive=gpu-1") == [queued.pk]
    assert ids("?state=failed&hive=gpu-1") == []
    bad = client.get("/api/jobs/?state=sleeping", headers=bearer)
    assert bad.status_code == 400 and "state" in bad.json()["fields"]


def test_job_json_keeps_its_fields_and_says_where_the_bytes_came_from(client, bearer, hive):
    job = DownloadJob.objects.create(reference="hf:acme/x", hive=hive, state=DownloadJob.RUNNING, bytes_done=300, bytes_total=1000)
    data = client.get(f"/api/jobs/{job.pk}/", headers=bearer).json()
    assert set(data) == {
        "id", "reference", "name", "hive", "hive_online", "vendor", "state", "bytes_done", "bytes_total",
        "bytes_from_origin", "bytes_from_peers", "percent", "speed_bps", "eta_s", "queue_position", "revision",
        "error", "error_kind", "entry_id", "last_seq", "created_at", "started_at", "finished_at", "url", "kind",
    }  # fmt: skip
    assert (data["bytes_from_origin"], data["bytes_from_peers"]) == (300, 0)
    assert data["percent"] == 30.0 and data["url"] == f"/jobs/{job.pk}/"


def test_it_cancels_a_queued_job_and_refuses_a_finished_one(client, bearer, gpus):
    job = DownloadJob.objects.create(reference="hf:acme/stop", hive=gpus[0])
    response = client.post(f"/api/jobs/{job.pk}/cancel/", headers=bearer)
    assert response.status_code == 200
    assert response.json()["state"] == "cancelled"
    assert job.events.get().human == "⏹ Cancelled by alice before it started"

    again = client.post(f"/api/jobs/{job.pk}/cancel/", headers=bearer)
    assert again.status_code == 409
    assert again.json() == {"error": f"job {job.pk} is cancelled; only a queued or running job can be cancelled"}


def test_a_running_job_is_asked_to_stop(client, bearer, gpus):
    job = DownloadJob.objects.create(reference="hf:acme/run", hive=gpus[0], state=DownloadJob.RUNNING)
    response = client.post(f"/api/jobs/{job.pk}/cancel/", headers=bearer)
    assert response.status_code == 200 and response.json()["state"] == "running"
    job.refresh_from_db()
    assert job.cancel_requested
    assert job.events.get().action == "model_download_cancel_requested"


def test_it_retries_a_failed_job_and_refuses_an_active_one(client, bearer, gpus):
    job = DownloadJob.objects.create(reference="hf:acme/again", hive=gpus[0], state=DownloadJob.FAILED, error="boom")
    response = client.post(f"/api/jobs/{job.pk}/retry/", headers=bearer)
    assert response.status_code == 200
    assert (response.json()["state"], response.json()["error"]) == ("queued", "")
    assert job.events.get().fields == {"retry": True}

    again = client.post(f"/api/jobs/{job.pk}/retry/", headers=bearer)
    assert again.status_code == 409
    assert "only a failed or cancelled job" in again.json()["error"]


def test_a_retry_that_would_make_a_second_active_job_is_refused(client, bearer, gpus):
    old = DownloadJob.objects.create(reference="hf:acme/two", hive=gpus[0], state=DownloadJob.FAILED)
    DownloadJob.objects.create(reference="hf:acme/two", hive=gpus[0])
    response = client.post(f"/api/jobs/{old.pk}/retry/", headers=bearer)
    assert response.status_code == 409
    assert "another job for hf:acme/two is active on hive gpu-1" in response.json()["error"]


def test_session_writes_need_csrf(alice, gpus):
    from django.test import Client

    job = DownloadJob.objects.create(reference="hf:acme/csrf", hive=gpus[0])
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    response = client.post(f"/api/jobs/{job.pk}/cancel/")
    assert response.status_code == 403 and response.json() == {"error": "CSRF check failed"}
    job.refresh_from_db()
    assert job.state == DownloadJob.QUEUED


def test_unknown_jobs_are_404_in_the_api_shape(client, bearer, hive):
    for path in ["/api/jobs/999/", "/api/jobs/999/events/"]:
        response = client.get(path, headers=bearer)
        assert response.status_code == 404 and response.json() == {"error": "no job 999"}
    assert client.post("/api/jobs/999/cancel/", headers=bearer).status_code == 404

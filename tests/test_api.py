"""The JSON API: session (with CSRF) or bearer token, staff only."""

from __future__ import annotations

import pytest
from django.test import Client

from accounts.models import ApiToken
from catalog.models import ModelEntry
from provisioner.models import Action, DownloadJob
from tests.helpers import wait_finished


@pytest.fixture
def token(alice) -> str:
    _, raw = ApiToken.issue(alice, "ci")
    return raw


@pytest.fixture
def bearer(token) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("path", ["/api/models/", "/api/jobs/", "/api/models/1/", "/api/jobs/1/", "/api/jobs/1/events/"])
def test_it_requires_login(client, db, path):
    response = client.get(path)
    assert response.status_code == 401
    assert response.json()["error"] == "authentication required"


def test_it_refuses_non_staff(bob_client, db):
    assert bob_client.get("/api/models/").status_code == 403


def test_it_refuses_a_bad_token(client, db):
    assert client.get("/api/jobs/", headers={"Authorization": "Bearer rbee_nope"}).status_code == 401


def test_a_token_of_a_non_staff_user_is_refused(client, bob):
    _, raw = ApiToken.issue(bob, "x")
    assert client.get("/api/jobs/", headers={"Authorization": f"Bearer {raw}"}).status_code == 403


def test_it_rejects_other_methods(alice_client, db):
    assert alice_client.delete("/api/jobs/").status_code == 405
    assert alice_client.post("/api/models/").status_code == 405


def test_session_posts_need_csrf(alice, hive):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    response = client.post("/api/jobs/", {"model": "a/b"}, content_type="application/json")
    assert response.status_code == 403


def test_token_posts_need_no_csrf(hive, bearer, settings):
    settings.HF_ENDPOINT = "http://127.0.0.1:9"
    client = Client(enforce_csrf_checks=True)
    response = client.post("/api/jobs/", {"model": "acme/x"}, content_type="application/json", headers=bearer)
    assert response.status_code == 201
    job = DownloadJob.objects.get(pk=response.json()["jobs"][0]["id"])
    assert job.requested_by.username == "alice"
    wait_finished(job)
    assert ApiToken.objects.get().last_used_at is not None


def test_it_downloads_and_reports_through_the_api(hub, hive, bearer, client):
    hub.add_repo("acme/api", {"config.json": b'{"x": 1}', "model.safetensors": b"w" * 5000})
    response = client.post("/api/jobs/", {"model": "hf:acme/api"}, content_type="application/json", headers=bearer)
    assert response.status_code == 201
    [created] = response.json()["jobs"]
    assert created["reference"] == "hf:acme/api" and created["hive"] == "local"
    job = wait_finished(DownloadJob.objects.get(pk=created["id"]))

    detail = client.get(f"/api/jobs/{job.pk}/", headers=bearer).json()
    assert detail["state"] == "succeeded"
    assert detail["bytes_done"] == detail["bytes_total"] == 5008
    assert detail["error"] == ""

    events = client.get(f"/api/jobs/{job.pk}/events/", headers=bearer).json()
    seqs = [e["seq"] for e in events["events"]]
    assert seqs == list(range(1, len(seqs) + 1))
    assert events["events"][-1]["action"] == "model_download_complete"
    later = client.get(f"/api/jobs/{job.pk}/events/?after=3", headers=bearer).json()
    assert [e["seq"] for e in later["events"]] == seqs[3:]
    assert client.get(f"/api/jobs/{job.pk}/events/?after=x", headers=bearer).status_code == 400

    models = client.get("/api/models/", headers=bearer).json()["models"]
    assert [m["reference"] for m in models] == ["hf:acme/api"]
    entry = client.get(f"/api/models/{models[0]['id']}/", headers=bearer).json()
    assert {f["path"] for f in entry["files"]} == {"config.json", "model.safetensors"}
    assert all(len(f["sha256"]) == 64 for f in entry["files"])
    assert client.get("/api/models/?q=nothing-like-it", headers=bearer).json()["models"] == []


def test_a_second_identical_post_returns_the_first_job(hive, bearer, client):
    first = DownloadJob.objects.create(reference="hf:acme/dup", hive=hive)
    response = client.post("/api/jobs/", {"model": "acme/dup"}, content_type="application/json", headers=bearer)
    assert response.status_code == 200 and [j["id"] for j in response.json()["jobs"]] == [first.pk]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"model": "not a model"}, "Supported forms"),
        ({"model": ""}, "required"),
        ({}, "required"),
        ({"model": "a/b", "hive": "nowhere"}, "unknown hive"),
    ],
)
def test_it_refuses_bad_requests_clearly(hive, bearer, client, body, words):
    response = client.post("/api/jobs/", body, content_type="application/json", headers=bearer)
    assert response.status_code == 400
    assert words in str(response.json())
    assert not DownloadJob.objects.exists()


def test_it_refuses_a_body_that_is_not_json(hive, bearer, client):
    response = client.post("/api/jobs/", "model=a/b", content_type="text/plain", headers=bearer)
    assert response.status_code == 400


def test_unknown_ids_are_404(hive, bearer, client):
    assert client.get("/api/jobs/999/", headers=bearer).status_code == 404
    assert client.get("/api/models/999/", headers=bearer).status_code == 404


def test_remote_text_is_returned_as_data(hive, bearer, client):
    job = DownloadJob.objects.create(reference="hf:a/b", hive=hive)
    job.narrate(Action.FAILED, "<img src=x onerror=alert(1)>")
    events = client.get(f"/api/jobs/{job.pk}/events/", headers=bearer)
    assert events["Content-Type"].startswith("application/json")
    assert events.json()["events"][0]["human"] == "<img src=x onerror=alert(1)>"


def test_model_list_filters(hive, bearer, client):
    ModelEntry.objects.create(hive=hive, reference="hf:a/one", name="a/one", vendor="huggingface", path="/x/1")
    ModelEntry.objects.create(hive=hive, reference="ollama:library/two:latest", name="two", vendor="ollama", path="/x/2")
    names = [m["name"] for m in client.get("/api/models/?vendor=ollama", headers=bearer).json()["models"]]
    assert names == ["two"]


def test_the_schema_is_openapi_3_and_covers_every_call(alice_client, db):
    schema = alice_client.get("/api/openapi.json").json()
    assert schema["openapi"].startswith("3.")
    assert {
        "/api/jobs/": {"get", "post"},
        "/api/jobs/{pk}/": {"get"},
        "/api/jobs/{pk}/events/": {"get"},
        "/api/jobs/{pk}/stream/": {"get"},
        "/api/jobs/{pk}/cancel/": {"post"},
        "/api/jobs/{pk}/retry/": {"post"},
        "/api/models/": {"get"},
        "/api/models/{pk}/": {"get", "patch", "delete"},
        "/api/models/{pk}/used/": {"post"},
        "/api/models/{pk}/verify/": {"post"},
        "/api/models/{pk}/repair/": {"post"},
        "/api/models/{pk}/update/": {"post"},
        "/api/models/{pk}/check-update/": {"post"},
        "/api/models/check-updates/": {"post"},
        "/api/hives/": {"get"},
        "/api/hives/{name}/": {"get", "patch"},
        "/api/jobs/{pk}/pause/": {"post"},
        "/api/jobs/{pk}/resume/": {"post"},
        "/api/jobs/{pk}/prioritize/": {"post"},
        "/api/hives/{name}/ensure/": {"post"},
    } == {path: set(operations) for path, operations in schema["paths"].items()}
    assert all(op["security"] for ops in schema["paths"].values() for op in ops.values())
    assert "bytes_from_peers" in schema["components"]["schemas"]["JobOut"]["properties"]


def test_the_schema_needs_staff_like_the_api(client, bob_client, bearer, db):
    assert client.get("/api/openapi.json").json() == {"error": "authentication required"}
    assert bob_client.get("/api/openapi.json").status_code == 403
    assert client.get("/api/openapi.json", headers=bearer).status_code == 200


def test_the_docs_page_needs_a_staff_login_and_no_cdn(client, alice_client, db):
    from django.contrib.staticfiles import finders

    assert client.get("/api/docs").url == "/accounts/login/?next=/api/docs"
    page = alice_client.get("/api/docs").content.decode()
    assert "/static/ninja/swagger-ui-bundle.js" in page and "/api/openapi.json" in page
    assert "https://" not in page and "//cdn" not in page
    assert finders.find("ninja/swagger-ui-bundle.js") and finders.find("ninja/swagger-ui.css")


@pytest.mark.parametrize(
    ("path", "error"),
    [
        ("/api/nothing/", "no API route /api/nothing/"),
        ("/api/jobs/abc/", "no API route /api/jobs/abc/"),
        ("/api/jobs", "no API route /api/jobs; did you mean /api/jobs/?"),
        ("/api/", "no API route /api/; the docs are at /api/docs"),
    ],
)
def test_unknown_routes_answer_json(alice_client, db, path, error):
    response = alice_client.get(path)
    assert response.status_code == 404
    assert response.json() == {"error": error}


def test_wrong_methods_answer_json(alice_client, db):
    response = alice_client.delete("/api/jobs/")
    assert response.status_code == 405
    assert response.json() == {"error": "DELETE is not allowed here"}

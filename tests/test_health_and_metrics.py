"""Probes (/healthz, /readyz), Prometheus metrics and JSON log lines."""

from __future__ import annotations

import json
import logging
from datetime import timedelta

import httpx
import pytest
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from catalog.models import Hive
from provisioner.models import DownloadJob, NarrationEvent
from rbee.logs import JsonFormatter
from tests.live import LiveDashboard, free_port
from tests.test_security import manage

# Probes


def test_healthz_answers_ok_without_touching_the_database(client):
    # No db fixture: pytest-django fails any query this makes.
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.content == b"ok"
    assert "no-cache" in response["Cache-Control"]


def test_healthz_rejects_post(client):
    assert client.post("/healthz").status_code == 405


def test_readyz_rejects_post(client):
    assert client.post("/readyz").status_code == 405


def test_readyz_is_ok_when_database_layer_and_pool_are_there(client, db):
    response = client.get("/readyz")
    assert response.status_code == 200, response.content
    assert response.json() == {"status": "ok", "checks": ["channel_layer", "database", "workers"]}


def test_readyz_wants_a_live_hive_worker_when_scaled(client, settings, db):
    settings.RBEE_SCALED = True
    hive = Hive.objects.create(name="gpu-1", last_heartbeat=timezone.now() - timedelta(minutes=10))
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "failed": {"workers": "no hive worker has sent a heartbeat lately"},
    }
    Hive.objects.filter(pk=hive.pk).update(last_heartbeat=timezone.now())
    assert client.get("/readyz").status_code == 200


@pytest.mark.slow
def test_readyz_names_what_is_down(tmp_path):
    """The real server with PostgreSQL and Redis where nothing listens: alive, not ready."""
    nowhere = free_port()
    env = {
        "DATABASE_URL": f"postgres://rbee:secret-pw@127.0.0.1:{nowhere}/rbee",
        "REDIS_URL": f"redis://:secret-pw@127.0.0.1:{nowhere}/0",
    }
    live = LiveDashboard(tmp_path / "data", env=env)
    live.data_dir.mkdir(parents=True)
    try:
        live.start()
        assert httpx.get(f"{live.url}/healthz").text == "ok"
        response = httpx.get(f"{live.url}/readyz", timeout=15)
    finally:
        live.stop()
    assert response.status_code == 503
    failed = response.json()["failed"]
    assert set(failed) == {"database", "channel_layer", "workers"}
    assert "secret-pw" not in response.text


# Metrics


def scrape(client: Client, **headers: str) -> dict[str, dict[tuple, float]]:
    """{sample name: {labels as sorted tuple: value}} from one scrape."""
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def test_it_refuses_strangers(db, settings):
    settings.RBEE_METRICS_TOKEN = "scrape-token"
    stranger = Client(REMOTE_ADDR="192.0.2.10")
    assert stranger.get("/metrics").status_code == 403
    assert stranger.get("/metrics", headers={"Authorization": "Bearer guess"}).status_code == 403
    assert stranger.get("/metrics", headers={"Authorization": "Bearer scrape-token"}).status_code == 200


def test_it_lets_allowed_addresses_scrape_without_a_token(db, settings):
    assert Client(REMOTE_ADDR="127.0.0.1").get("/metrics").status_code == 200
    assert Client(REMOTE_ADDR="::1").get("/metrics").status_code == 200
    assert Client(REMOTE_ADDR="192.0.2.10").get("/metrics").status_code == 403
    settings.RBEE_METRICS_ALLOW = ["192.0.2.0/24"]
    assert Client(REMOTE_ADDR="192.0.2.10").get("/metrics").status_code == 200


def test_it_rejects_post(client, db):
    assert client.post("/metrics").status_code == 405


def test_it_counts_jobs_bytes_retries_and_failures_from_the_database(client, db):
    now = timezone.now()
    gpu = Hive.objects.create(name="gpu-1", disk_total=1000, disk_free=400, last_heartbeat=now)
    done = DownloadJob.objects.create(
        reference="hf:acme/tiny", hive=gpu, vendor="huggingface", state=DownloadJob.SUCCEEDED,
        bytes_done=5000, bytes_total=5000, started_at=now - timedelta(seconds=90), finished_at=now,
    )
    DownloadJob.objects.create(
        reference="hf:acme/bad", hive=gpu, vendor="huggingface", state=DownloadJob.FAILED, error_kind="verification",
        bytes_done=700, started_at=now - timedelta(seconds=4), finished_at=now,
    )
    DownloadJob.objects.create(reference="ollama:library/x:latest", hive=gpu, vendor="ollama")
    for seq in (1, 2):
        NarrationEvent.objects.create(job=done, seq=seq, action="model_download_retry", human="retrying")

    samples = scrape(client)

    hive = (("hive", "gpu-1"),)
    assert samples["rbee_downloaded_bytes_total"][(("hive", "gpu-1"), ("source", "origin"), ("vendor", "huggingface"))] == 5700
    assert samples["rbee_downloaded_bytes_total"][(("hive", "gpu-1"), ("source", "peer"), ("vendor", "huggingface"))] == 0
    assert samples["rbee_jobs"][(("hive", "gpu-1"), ("state", "succeeded"))] == 1
    assert samples["rbee_jobs"][(("hive", "gpu-1"), ("state", "running"))] == 0
    assert samples["rbee_queue_depth"][hive] == 1
    assert samples["rbee_download_retries_total"][hive] == 2
    assert samples["rbee_verification_failures_total"][hive] == 1
    assert samples["rbee_hive_free_bytes"][hive] == 400
    assert samples["rbee_hive_online"][hive] == 1
    succeeded = (("hive", "gpu-1"), ("state", "succeeded"))
    assert samples["rbee_job_duration_seconds_count"][succeeded] == 1
    assert samples["rbee_job_duration_seconds_sum"][succeeded] == pytest.approx(90)
    buckets = samples["rbee_job_duration_seconds_bucket"]
    assert buckets[(("hive", "gpu-1"), ("le", "60.0"), ("state", "succeeded"))] == 0
    assert buckets[(("hive", "gpu-1"), ("le", "120.0"), ("state", "succeeded"))] == 1
    assert buckets[(("hive", "gpu-1"), ("le", "5.0"), ("state", "failed"))] == 1


# Logs


def test_json_log_lines_carry_time_level_logger_message_and_extra_fields():
    record = logging.LogRecord("provisioner.tasks", logging.WARNING, __file__, 1, "job %s stalled", (7,), None)
    record.job_id = 7
    record.hive = "gpu-1"
    line = json.loads(JsonFormatter().format(record))
    assert line["level"] == "WARNING" and line["logger"] == "provisioner.tasks"
    assert line["message"] == "job 7 stalled"
    assert (line["job_id"], line["hive"]) == (7, "gpu-1")
    assert line["time"].endswith("+00:00")
    assert "args" not in line and "msg" not in line


@pytest.mark.slow
def test_rbee_log_format_json_makes_every_line_json(tmp_path):
    code = "import logging; logging.getLogger('rbee.check').warning('hello %s', 'world', extra={'job_id': 3})"
    result = manage("shell", "--no-imports", "-c", code, env={"RBEE_DATA_DIR": str(tmp_path), "RBEE_LOG_FORMAT": "json"})
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
    assert {"level": "WARNING", "logger": "rbee.check", "message": "hello world", "job_id": 3}.items() <= lines[-1].items()


@pytest.mark.slow
def test_an_unknown_log_format_is_refused(tmp_path):
    result = manage("check", env={"RBEE_DATA_DIR": str(tmp_path), "RBEE_LOG_FORMAT": "xml"})
    assert result.returncode != 0 and "RBEE_LOG_FORMAT must be plain or json" in result.stderr


@pytest.mark.slow
def test_a_metrics_allowlist_that_is_no_network_is_refused(tmp_path):
    result = manage("check", env={"RBEE_DATA_DIR": str(tmp_path), "RBEE_METRICS_ALLOW": "10.0.0.0/8,intranet"})
    assert result.returncode != 0 and "RBEE_METRICS_ALLOW: 'intranet' is not an address or a network" in result.stderr

"""What a remote end sends is never repeated to the admin.

A service that is not HTTP answers a connection with its own first line (Redis,
SMTP and SSH do; some put a password or an internal host name in it). That line
must not reach the job's error, its narration or the plan preview: transport
failures are told in fixed words, the failure and host:port at most.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from provisioner.models import DownloadJob, NarrationEvent
from tests.helpers import download
from tests.servers.raw import RawService

SECRET = "hunter2-S3cr3t-banner-token"
BANNERS = [
    f"-ERR invalid password '{SECRET}' for default user\r\n".encode(),
    f"SSH-2.0-OpenSSH_9.6 {SECRET}\r\n".encode(),
    f"HTTP/1.1 200 {SECRET}\r\nContent-Length: nonsense-{SECRET}\r\n\r\n".encode(),
]


@pytest.fixture(params=BANNERS, ids=["redis", "ssh", "broken-http"])
def service(request) -> Iterator[RawService]:
    with RawService(request.param) as server:
        yield server


def story(job: DownloadJob) -> str:
    events = NarrationEvent.objects.filter(job=job)
    return job.error + "".join(e.human + json.dumps(e.fields) for e in events)


@pytest.mark.parametrize(
    "reference",
    ["http://127.0.0.1:{port}/model.gguf", "ollama:127.0.0.1:{port}/library/tiny:latest"],
    ids=["url", "ollama"],
)
def test_a_banner_reaches_no_job_error_narration_or_preview(service, hive, alice_client, reference):
    reference = reference.format(port=service.port)

    job = download(reference, hive)
    preview = alice_client.post("/jobs/plan/", {"model": reference}).content.decode()

    assert job.state == DownloadJob.FAILED
    assert SECRET not in story(job)
    assert SECRET not in preview
    if not service.banner.startswith(b"HTTP/"):
        assert job.error_kind == "network"
        assert f"127.0.0.1:{service.port}" in job.error  # where, in fixed words
        assert "did not answer HTTP" in job.error or "without answering" in job.error
        assert f"127.0.0.1:{service.port}" in preview


def test_a_banner_from_the_configured_hub_is_not_repeated_either(service, hive, alice_client, settings):
    settings.HF_ENDPOINT = f"http://127.0.0.1:{service.port}"

    job = download("acme/tiny", hive)
    preview = alice_client.post("/jobs/plan/", {"model": "acme/tiny"}).content.decode()

    assert job.state == DownloadJob.FAILED
    assert SECRET not in story(job)
    assert SECRET not in preview


def test_a_banner_during_the_transfer_is_not_repeated(service, hive, settings):
    """The plan came from a real server; the bytes are asked of the banner service."""
    from tests.servers.faults import FaultServer

    with FaultServer() as files:
        files.add_file("m.gguf", b"x" * 1000)
        files.set_fault("m.gguf", statuses=[(302, {"Location": f"http://127.0.0.1:{service.port}/m.gguf"})] * 10)
        job = download(files.url_for("m.gguf"), hive)

    assert job.state == DownloadJob.FAILED
    assert SECRET not in story(job)
    assert f"127.0.0.1:{service.port}" in job.error

"""Downloads honour the proxy the environment names, as curl and huggingface_hub do."""

from __future__ import annotations

import base64

import pytest
from huggingface_hub.utils._http import close_session

from provisioner.models import DownloadJob
from tests.helpers import blob, download, sha256
from tests.servers.proxy import ForwardProxy


@pytest.fixture(autouse=True)
def _fresh_hub_client():
    """huggingface_hub keeps one client per process, proxies read when it is made."""
    close_session()
    yield
    close_session()


def test_it_downloads_through_an_http_proxy_with_credentials(hub, hive, monkeypatch):
    weights = blob(2 * 1024 * 1024 + 3, seed=5)
    hub.add_repo("acme/proxied", {"config.json": b"{}", "model.safetensors": weights})
    with ForwardProxy() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url.replace("http://", "http://ops:s%40cret@"))
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        job = download("acme/proxied", hive)
        requests = proxy.requests
    assert job.state == DownloadJob.SUCCEEDED, job.error
    assert job.entry.files.get(path="model.safetensors").sha256 == sha256(weights)
    bytes_requests = [r for r in requests if r.target.startswith(hub.file_host.url)]
    assert bytes_requests, [r.target for r in requests]
    expected = "Basic " + base64.b64encode(b"ops:s@cret").decode()
    assert all(r.proxy_authorization == expected for r in bytes_requests)


def test_no_proxy_is_respected(hub, hive, monkeypatch):
    hub.add_repo("acme/direct", {"config.json": b"{}", "model.safetensors": blob(1000)})
    with ForwardProxy() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        job = download("acme/direct", hive)
        assert proxy.requests == []
    assert job.state == DownloadJob.SUCCEEDED, job.error


def test_a_typed_address_inside_is_refused_before_the_proxy_is_asked(hive, settings, monkeypatch):
    settings.RBEE_ALLOWED_PRIVATE_HOSTS = []
    with ForwardProxy() as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        job = download("https://169.254.169.254/latest/x.gguf", hive)
        requests = proxy.requests
    assert job.error_kind == "refused_address", job.error
    assert requests == []


def test_a_name_only_the_proxy_can_resolve_is_left_to_the_proxy(hive, settings, monkeypatch):
    """Behind a corporate proxy the dashboard may have no DNS of its own: the proxy resolves, under its rules."""
    settings.RBEE_ALLOWED_PRIVATE_HOSTS = []
    with ForwardProxy() as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        job = download("https://models.invalid/x.gguf", hive)
        requests = proxy.requests
    assert job.state == DownloadJob.FAILED
    assert job.error_kind == "network"  # the proxy could not reach it either
    assert [(r.method, r.target) for r in requests] == [("CONNECT", "models.invalid:443")]

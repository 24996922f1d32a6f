"""What an admin types cannot make the server connect inside its own network.

A URL or an ``ollama:HOST/…`` registry that names (or redirects to) a loopback,
private, link-local or otherwise non-public address is refused before any
connection is made. The proof is on the wire: a socket listening where the
reference points sees no connection, and Python's own ``socket.connect`` audit
event (an observer, not a mock) never fires for an address that was refused.
"""

from __future__ import annotations

import http.server
import json
import re
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from catalog.models import ModelEntry
from provisioner.models import DownloadJob
from provisioner.vendors import transfer
from tests.helpers import blob, download, sha256
from tests.servers.faults import FaultServer
from tests.servers.raw import RawService
from tests.servers.tls import CertificateAuthority, HttpsFileServer

WEIGHTS = blob(100_000, seed=77)

# -- watching the wire ----------------------------------------------------------------

_connects: list[tuple[object, ...]] | None = None


def _audit(event: str, args: tuple[object, ...]) -> None:
    if event == "socket.connect" and _connects is not None:
        address = args[1]
        _connects.append(address if isinstance(address, tuple) else (address,))


sys.addaudithook(_audit)  # audit hooks cannot be removed; it records only inside connects_made()


@contextmanager
def connects_made() -> Iterator[list[tuple[object, ...]]]:
    """Every address any socket of this process tried to connect to meanwhile."""
    global _connects
    seen: list[tuple[object, ...]] = []
    _connects = seen
    try:
        yield seen
    finally:
        _connects = None


@pytest.fixture
def nothing_private(settings) -> None:
    """The production default: no private address is allowed."""
    settings.RBEE_ALLOWED_PRIVATE_HOSTS = []


@pytest.fixture
def listener() -> Iterator[RawService]:
    with RawService() as running:
        yield running


def assert_refused(job: DownloadJob) -> None:
    assert job.state == DownloadJob.FAILED
    assert job.error_kind == "refused_address", job.error
    assert "RBEE_ALLOWED_PRIVATE_HOSTS" in job.error
    assert not ModelEntry.objects.exists()


# -- URL references ----------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_it_refuses_a_loopback_url_before_connecting(nothing_private, hive, listener, scheme):
    with connects_made() as connects:
        job = download(f"{scheme}://127.0.0.1:{listener.port}/x.gguf", hive)

    assert_refused(job)
    assert listener.accepted == 0
    assert not any(a[:2] == ("127.0.0.1", listener.port) for a in connects)


@pytest.mark.parametrize(
    "url",
    [
        "https://10.0.0.1/m.gguf",
        "https://169.254.169.254/latest/meta-data/m.gguf",
        "https://172.16.5.4/m.gguf",
        "https://192.168.1.10/m.gguf",
        "https://100.64.0.1/m.gguf",
        "https://0.0.0.0/m.gguf",
        "https://224.0.0.1/m.gguf",
        "https://[::1]/m.gguf",
        "https://[fe80::1]/m.gguf",
        "https://[fc00::1]/m.gguf",
        "https://[::ffff:127.0.0.1]/m.gguf",
        "https://[64:ff9b::a9fe:a9fe]/m.gguf",
        "https://[2002:7f00:1::]/m.gguf",
        "https://localhost:6379/m.gguf",
    ],
)
def test_it_refuses_private_and_link_local_addresses_before_any_traffic(nothing_private, hive, url):
    with connects_made() as connects:
        job = download(url, hive)

    assert_refused(job)
    internet = [a for a in connects if a and a[0] not in ("127.0.0.1",)]  # the test database is local
    assert internet == [], connects


def test_a_refused_address_says_the_same_whatever_listens_there(nothing_private, hive, listener):
    """No port-scan oracle: an open and a closed port on a refused host read alike."""
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()

    open_job = download(f"https://127.0.0.1:{listener.port}/redis", hive)
    closed_job = download(f"https://127.0.0.1:{closed_port}/redis", hive)

    assert open_job.error_kind == closed_job.error_kind == "refused_address"
    assert open_job.error.replace(str(listener.port), "PORT") == closed_job.error.replace(str(closed_port), "PORT")
    assert listener.accepted == 0


@pytest.mark.parametrize("allowed", [["127.0.0.1"], ["127.0.0.0/8"], ["localhost"], "localhost,10.0.0.0/8"])
def test_an_operator_can_allow_a_private_host(settings, hive, allowed):
    settings.RBEE_ALLOWED_PRIVATE_HOSTS = allowed
    with FaultServer() as files:
        files.add_file("m.gguf", WEIGHTS)
        url = files.url_for("m.gguf")
        if "localhost" in allowed:
            url = url.replace("127.0.0.1", "localhost")
        job = download(f"{url}#sha256={sha256(WEIGHTS)}", hive)

    assert job.state == DownloadJob.SUCCEEDED, job.error


class _Redirector(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, location: str) -> None:
        super().__init__(("127.0.0.1", 0), _RedirectHandler)
        self.location = location
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> _Redirector:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()


class _RedirectHandler(http.server.BaseHTTPRequestHandler):
    server: _Redirector

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_HEAD(self) -> None:
        self.send_response(302)
        self.send_header("Location", self.server.location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_HEAD


def test_a_redirect_from_an_allowed_host_into_a_refused_one_is_refused(settings, hive, listener):
    settings.RBEE_ALLOWED_PRIVATE_HOSTS = ["localhost"]  # the name is allowed, 127.0.0.1 itself is not
    with _Redirector(f"http://127.0.0.1:{listener.port}/x.gguf") as redirector:
        job = download(f"http://localhost:{redirector.server_address[1]}/x.gguf", hive)

    assert_refused(job)
    assert listener.accepted == 0


@pytest.mark.parametrize("target", ["https://10.0.0.1/x.gguf", "http://169.254.169.254/latest/meta-data/"])
def test_a_redirect_into_the_private_network_is_refused_before_any_traffic(hive, target):
    with _Redirector(target) as redirector, connects_made() as connects:
        job = download(f"http://127.0.0.1:{redirector.server_address[1]}/x.gguf", hive)

    assert_refused(job)
    assert [a for a in connects if a and a[0] != "127.0.0.1"] == []


def test_a_redirect_during_the_transfer_is_checked_too(settings, hive, listener):
    """The plan's HEAD is answered; the GET that follows redirects inside."""
    settings.RBEE_ALLOWED_PRIVATE_HOSTS = ["localhost"]
    with FaultServer() as files:
        files.add_file("m.gguf", WEIGHTS)
        files.set_fault("m.gguf", statuses=[(302, {"Location": f"http://127.0.0.1:{listener.port}/m.gguf"})])
        job = download(files.url_for("m.gguf").replace("127.0.0.1", "localhost"), hive)

    assert_refused(job)
    assert listener.accepted == 0
    assert not job.partial_dir.exists()


def test_it_refuses_a_redirect_to_plain_http_elsewhere(hive):
    with _Redirector("http://example.com/x.gguf") as redirector, connects_made() as connects:
        job = download(f"http://127.0.0.1:{redirector.server_address[1]}/x.gguf", hive)

    assert_refused_or_plain_http(job)
    assert [a for a in connects if a and a[0] != "127.0.0.1"] == []


def assert_refused_or_plain_http(job: DownloadJob) -> None:
    assert job.state == DownloadJob.FAILED
    assert job.error_kind == "refused_address"
    assert "plain http://" in job.error


def test_it_wants_a_file_not_a_web_page(hive):
    with FaultServer() as files:
        files.add_file("models/llama", b"<!doctype html><title>Llama</title>", headers={"Content-Type": "text/html"})
        job = download(files.url_for("models/llama"), hive)

    assert job.state == DownloadJob.FAILED
    assert job.error_kind == "not_a_file"
    assert "web page" in job.error


def test_the_preview_refuses_too(nothing_private, alice_client, hive, listener):
    body = alice_client.post("/jobs/plan/", {"model": f"https://127.0.0.1:{listener.port}/x.gguf"}).content.decode()

    assert "refusing to connect" in body
    assert listener.accepted == 0


# -- Ollama registries -------------------------------------------------------------------


@pytest.mark.parametrize("host", ["10.0.0.1:5000", "169.254.169.254", "127.0.0.1:{port}", "localhost:{port}"])
def test_it_refuses_a_typed_registry_inside(nothing_private, hive, listener, host):
    with connects_made() as connects:
        job = download(f"ollama:{host.format(port=listener.port)}/library/tiny:latest", hive)

    assert_refused(job)
    assert listener.accepted == 0
    assert [a for a in connects if a and a[0] != "127.0.0.1"] == []


def test_a_token_realm_inside_is_refused(settings, hive, listener):
    settings.RBEE_ALLOWED_PRIVATE_HOSTS = ["localhost"]
    challenge = f'Bearer realm="http://127.0.0.1:{listener.port}/token",service="registry"'
    with FaultServer() as registry:
        registry.add_file("v2/library/tiny/manifests/latest", b"{}")
        registry.set_fault("v2/library/tiny/manifests/latest", statuses=[(401, {"WWW-Authenticate": challenge})])
        job = download(f"ollama:localhost:{registry.port}/library/tiny:latest", hive)

    assert_refused(job)
    assert listener.accepted == 0


# -- configured endpoints are trusted ------------------------------------------------------


def test_the_configured_hub_and_its_redirects_are_trusted(nothing_private, hub, hive):
    """The fake Hub on 127.0.0.1 redirects LFS files to a second loopback host, as the Hub does to its CDN."""
    hub.add_repo("acme/trusted", {"config.json": b"{}", "model.safetensors": WEIGHTS})

    job = download("acme/trusted", hive)

    assert job.state == DownloadJob.SUCCEEDED, job.error
    assert hub.file_host.gets  # the bytes came from the redirect target


def test_the_configured_ollama_registry_is_trusted(nothing_private, settings, hive):
    with FaultServer() as registry:
        digest = "sha256:" + sha256(WEIGHTS)
        registry.add_file(f"v2/library/trusted/blobs/{digest}", WEIGHTS)
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "layers": [{"mediaType": "application/vnd.ollama.image.model", "digest": digest, "size": len(WEIGHTS)}],
        }
        registry.add_file("v2/library/trusted/manifests/latest", json.dumps(manifest).encode())
        settings.RBEE_OLLAMA_REGISTRY = registry.url
        job = download("ollama:trusted", hive)

    assert job.state == DownloadJob.SUCCEEDED, job.error


def test_error_messages_name_no_address_they_resolved(nothing_private, hive):
    job = download("https://localhost:6379/x.gguf", hive)
    assert not re.search(r"127\.0\.0\.1|::1", job.error)


def test_the_form_refuses_an_address_inside_before_anything_is_queued(nothing_private, alice_client, hive, listener):
    for model in (f"https://127.0.0.1:{listener.port}/x.gguf", "ollama:169.254.169.254/library/tiny"):
        response = alice_client.post("/jobs/", {"model": model})

        assert response.status_code == 400
        assert "refusing to connect" in response.content.decode()
    assert not DownloadJob.objects.exists()
    assert listener.accepted == 0


def test_the_api_refuses_it_too(nothing_private, alice_client, hive):
    response = alice_client.post("/api/jobs/", {"model": "https://169.254.169.254/x.gguf"}, content_type="application/json")

    assert response.status_code == 400
    assert "refusing to connect" in str(response.json())
    assert not DownloadJob.objects.exists()


# -- TLS to a pinned address ---------------------------------------------------------------


def trusting(authority: CertificateAuthority) -> CertificateAuthority:
    """Add the test CA to the transfer's TLS context, as an operator adds a private CA with SSL_CERT_FILE."""
    transfer._tls().load_verify_locations(cadata=authority.ca_pem)
    return authority


def test_a_pinned_connection_still_speaks_tls_to_the_name(settings, hive):
    """The certificate names only "localhost": verifying against the address, or sending no SNI, would fail."""
    settings.RBEE_ALLOWED_PRIVATE_HOSTS = ["localhost"]
    authority = trusting(CertificateAuthority("localhost"))
    with HttpsFileServer(WEIGHTS, authority) as server, connects_made() as connects:
        job = download(f"https://localhost:{server.port}/m.gguf#sha256={sha256(WEIGHTS)}", hive)

    assert job.state == DownloadJob.SUCCEEDED, job.error
    assert server.server_names and set(server.server_names) == {"localhost"}
    assert {a[0] for a in connects if len(a) >= 2 and a[1] == server.port} <= {"127.0.0.1", "::1"}


def test_a_certificate_for_another_name_is_refused(settings, hive):
    settings.RBEE_ALLOWED_PRIVATE_HOSTS = ["localhost"]
    authority = trusting(CertificateAuthority("models.example.org"))
    with HttpsFileServer(WEIGHTS, authority) as server:
        job = download(f"https://localhost:{server.port}/m.gguf", hive)

    assert job.state == DownloadJob.FAILED
    assert job.error_kind == "network"
    assert f"TLS certificate is not valid for it (localhost:{server.port})" in job.error

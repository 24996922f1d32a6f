"""Ollama models: pulled from a real OCI registry (distribution 2.8), and from a
fault-injecting server posing as one for what a well-behaved registry never does."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from catalog.models import ModelEntry
from provisioner.models import DownloadJob
from provisioner.references import parse_reference
from provisioner.vendors.ollama import registry_base
from tests.helpers import actions, blob, download, files_below, sha256, wait_finished
from tests.servers.faults import FaultServer
from tests.servers.registry import OciRegistry

OLLAMA = "application/vnd.ollama.image."
WEIGHTS = blob(256 * 1024 + 7, seed=11)
TEMPLATE = b"{{ if .System }}<|system|>{{ .System }}{{ end }}<|user|>{{ .Prompt }}"
PARAMS = b'{"stop": ["<|user|>"], "temperature": 0.7}'
LAYERS = [
    (OLLAMA + "model", WEIGHTS),
    (OLLAMA + "template", TEMPLATE),
    (OLLAMA + "params", PARAMS),
    (OLLAMA + "system", b"You are a tiny test model."),
    (OLLAMA + "license", b"MIT License"),
    (OLLAMA + "license", b"Llama 3.2 Community License"),
    (OLLAMA + "future+thing", b"a layer type this dashboard has never heard of"),
]


@pytest.fixture(scope="module")
def registry() -> Iterator[OciRegistry]:
    with OciRegistry() as running:
        yield running


@pytest.fixture
def ollama(registry: OciRegistry, settings) -> OciRegistry:
    settings.RBEE_OLLAMA_REGISTRY = registry.url
    return registry


@pytest.fixture
def fake_registry() -> Iterator[FaultServer]:
    with FaultServer() as server:
        yield server


def serve_model(server: FaultServer, layers: list[tuple[str, bytes]], *, name: str = "library/tiny") -> tuple[str, dict]:
    """Lay a model out on a FaultServer the way a registry serves it; return its digest and manifest."""
    descriptors = []
    for media_type, data in layers:
        digest = "sha256:" + sha256(data)
        server.add_file(f"v2/{name}/blobs/{digest}", data)
        descriptors.append({"mediaType": media_type, "digest": digest, "size": len(data)})
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "layers": descriptors,
    }
    raw = json.dumps(manifest).encode()
    server.add_file(f"v2/{name}/manifests/latest", raw)
    return "sha256:" + sha256(raw), manifest


def host_reference(server: FaultServer, name: str = "library/tiny") -> str:
    return f"ollama:{server.url.removeprefix('http://')}/{name}:latest"


@pytest.mark.slow
def test_it_pulls_every_layer_from_a_real_registry(ollama, hive, alice_client):
    digest = ollama.push_ollama_model("library", "tiny", "latest", LAYERS)

    job = download("ollama:tiny", hive)

    assert job.state == DownloadJob.SUCCEEDED, job.error
    entry = ModelEntry.objects.get(hive=hive, reference="ollama:library/tiny:latest")
    assert entry.vendor == "ollama"
    assert entry.revision == digest == job.revision
    folder = Path(entry.path)
    assert files_below(folder) == {
        "model.gguf",
        "template",
        "params.json",
        "system",
        "license",
        "license-2",
        "future_thing",
        "config.json",
        "manifest.json",
    }
    assert (folder / "model.gguf").read_bytes() == WEIGHTS
    assert (folder / "template").read_bytes() == TEMPLATE
    assert (folder / "license-2").read_bytes() == b"Llama 3.2 Community License"
    assert hashlib.sha256((folder / "manifest.json").read_bytes()).hexdigest() == digest.removeprefix("sha256:")
    rows = {f.path: f for f in entry.files.all()}
    assert rows["model.gguf"].media_type == OLLAMA + "model"
    assert rows["model.gguf"].sha256 == sha256(WEIGHTS)
    assert rows["params.json"].media_type == OLLAMA + "params"
    assert rows["manifest.json"].media_type == "application/vnd.docker.distribution.manifest.v2+json"
    assert rows["config.json"].media_type == "application/vnd.docker.container.image.v1+json"
    assert all(len(row.sha256) == 64 for row in rows.values())
    assert entry.size_bytes == sum(row.size_bytes for row in rows.values())
    assert actions(job)[-1] == "model_download_complete"
    page = alice_client.get(f"/models/{entry.pk}/").content.decode()
    assert OLLAMA + "template" in page and digest in page


@pytest.mark.slow
def test_it_treats_the_three_spellings_as_one_model(ollama, hive):
    ollama.push_ollama_model("library", "spelled", "latest", LAYERS[:2])

    first = download("ollama:spelled", hive)
    second = download("ollama:spelled:latest", hive)
    third = download("ollama:library/spelled:latest", hive)

    assert first.state == second.state == third.state == DownloadJob.SUCCEEDED
    assert "model_download_exists" in actions(second)
    assert "model_download_exists" in actions(third)
    assert ModelEntry.objects.filter(hive=hive).count() == 1
    assert second.entry == third.entry == first.entry


@pytest.mark.slow
def test_it_pulls_from_a_registry_named_in_the_reference(registry, hive, settings):
    settings.RBEE_OLLAMA_REGISTRY = "http://127.0.0.1:9"  # must not be asked
    digest = registry.push_ollama_model("acme", "named", "v1", LAYERS[:3])

    job = download(f"ollama:{registry.host}/acme/named:v1", hive)

    assert job.state == DownloadJob.SUCCEEDED, job.error
    assert job.entry.reference == f"ollama:{registry.host}/acme/named:v1"
    assert job.entry.revision == digest


@pytest.mark.slow
def test_it_downloads_the_manifest_the_preview_showed_even_if_the_tag_moved(ollama, hive, alice_client):
    shown = ollama.push_ollama_model("library", "moving", "latest", LAYERS[:2])
    preview = alice_client.post("/jobs/plan/", {"model": "ollama:moving"}).content.decode()
    assert "model.gguf" in preview and shown.removeprefix("sha256:")[:5] in preview
    ollama.push_ollama_model("library", "moving", "latest", [(OLLAMA + "model", blob(1000, seed=99))])

    response = alice_client.post("/jobs/", {"model": "ollama:moving"})

    assert response.status_code == 303
    job = wait_finished(DownloadJob.objects.get())
    assert job.state == DownloadJob.SUCCEEDED, job.error
    assert job.entry.revision == shown
    assert (Path(job.entry.path) / "model.gguf").read_bytes() == WEIGHTS


@pytest.mark.slow
@pytest.mark.parametrize("reference", ["ollama:tiny:no-such-tag", "ollama:no-such-model"])
def test_it_says_when_the_model_or_tag_is_missing(ollama, hive, reference):
    ollama.push_ollama_model("library", "tiny", "latest", LAYERS[:1])

    job = download(reference, hive)

    assert job.state == DownloadJob.FAILED
    assert job.error_kind == "not_found"
    assert "model or tag not found" in job.error
    assert not ModelEntry.objects.exists()


def test_it_catches_a_corrupted_blob_after_one_fresh_retry(fake_registry, hive):
    serve_model(fake_registry, [(OLLAMA + "model", WEIGHTS)])
    blob_name = f"v2/library/tiny/blobs/sha256:{sha256(WEIGHTS)}"
    fake_registry.set_fault(blob_name, flip_byte_at=1000)

    job = download(host_reference(fake_registry), hive)

    assert job.state == DownloadJob.FAILED
    assert job.error_kind == "verification"
    assert "model.gguf" in job.error
    assert len(fake_registry.gets(blob_name)) == 2
    assert not ModelEntry.objects.exists()
    assert not job.partial_dir.exists()


def test_it_resumes_a_dropped_blob_with_range(fake_registry, hive):
    digest, _ = serve_model(fake_registry, [(OLLAMA + "model", WEIGHTS), (OLLAMA + "template", TEMPLATE)])
    blob_name = f"v2/library/tiny/blobs/sha256:{sha256(WEIGHTS)}"
    fake_registry.set_fault(blob_name, drop_after=100_000)

    job = download(host_reference(fake_registry), hive)

    assert job.state == DownloadJob.SUCCEEDED, job.error
    assert [r.range for r in fake_registry.gets(blob_name)] == [None, "bytes=100000-"]
    assert (Path(job.entry.path) / "model.gguf").read_bytes() == WEIGHTS
    assert job.entry.revision == digest
    assert "model_download_retry" in actions(job)


@pytest.mark.parametrize("bad", ["sha256:../../etc/passwd", "sha256:" + "A" * 64, "md5:" + "0" * 32, None])
def test_it_refuses_a_digest_that_is_not_plain_sha256_before_using_it(fake_registry, hive, settings, bad):
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "layers": [{"mediaType": OLLAMA + "model", "digest": bad, "size": 10}],
    }
    fake_registry.add_file("v2/library/tiny/manifests/latest", json.dumps(manifest).encode())

    job = download(host_reference(fake_registry), hive)

    assert job.state == DownloadJob.FAILED
    assert job.error_kind == "unsafe_path"
    assert [r.name for r in fake_registry.requests] == ["v2/library/tiny/manifests/latest"]
    assert not any("etc" in p or "passwd" in p for p in files_below(settings.RBEE_MODELS_DIR))


def test_it_refuses_a_manifest_that_does_not_match_the_registry_digest(fake_registry, hive):
    serve_model(fake_registry, [(OLLAMA + "model", WEIGHTS)])
    raw = json.dumps({"schemaVersion": 2, "layers": [{"mediaType": OLLAMA + "model", "digest": "sha256:" + "1" * 64, "size": 1}]})
    fake_registry.add_file(
        "v2/library/tiny/manifests/latest", raw.encode(), headers={"Docker-Content-Digest": "sha256:" + "0" * 64}
    )

    job = download(host_reference(fake_registry), hive)

    assert job.state == DownloadJob.FAILED
    assert job.error_kind == "verification"
    assert "sha256:" + "0" * 64 in job.error


def test_it_refuses_an_image_that_is_not_an_ollama_model(fake_registry, hive):
    serve_model(fake_registry, [("application/vnd.docker.image.rootfs.diff.tar.gzip", b"tarball")])

    job = download(host_reference(fake_registry), hive)

    assert job.state == DownloadJob.FAILED
    assert job.error_kind == "not_a_model"
    assert "not an Ollama model" in job.error


def test_it_answers_an_anonymous_token_challenge(fake_registry, hive):
    serve_model(fake_registry, [(OLLAMA + "model", WEIGHTS)])
    fake_registry.add_file("token", b'{"token": "anonymous-pull-token"}')
    challenge = f'Bearer realm="{fake_registry.url}/token",service="registry",scope="repository:library/tiny:pull"'
    fake_registry.set_fault("v2/library/tiny/manifests/latest", statuses=[(401, {"WWW-Authenticate": challenge})])

    job = download(host_reference(fake_registry), hive)

    assert job.state == DownloadJob.SUCCEEDED, job.error
    token_request = fake_registry.gets("token")[0]
    assert "scope=repository%3Alibrary%2Ftiny%3Apull" in token_request.query
    manifest_gets = fake_registry.gets("v2/library/tiny/manifests/latest")
    assert manifest_gets[0].status == 401
    assert manifest_gets[1].authorization == "Bearer anonymous-pull-token"


def test_it_says_when_the_registry_cannot_be_reached(hive, settings):
    settings.RBEE_OLLAMA_REGISTRY = "http://127.0.0.1:9"  # nothing listens on the discard port
    job = download("ollama:tiny", hive)
    assert job.state == DownloadJob.FAILED
    assert job.error_kind == "network"
    assert "127.0.0.1:9" in job.error


@pytest.mark.parametrize(
    ("reference", "base"),
    [
        ("ollama:tiny", "http://registry.test"),
        ("ollama:127.0.0.1:5000/library/tiny", "http://127.0.0.1:5000"),
        ("ollama:localhost:5000/tiny", "http://localhost:5000"),
        ("ollama:registry.example.com/acme/tiny", "https://registry.example.com"),
        ("ollama:127.0.0.1.example.com/library/tiny", "https://127.0.0.1.example.com"),
    ],
)
def test_it_uses_plain_http_only_for_a_loopback_registry(settings, reference, base):
    settings.RBEE_OLLAMA_REGISTRY = "http://registry.test"
    assert registry_base(parse_reference(reference)) == base

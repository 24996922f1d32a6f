"""The catalog as engines see it: a Hugging Face cache that the real huggingface_hub
reads offline, and an Ollama store laid out file by file as Ollama's own."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from django.conf import settings
from huggingface_hub import hf_hub_download, scan_cache_dir, snapshot_download

from catalog.models import ModelEntry
from provisioner.engines import engine_lines
from provisioner.lifecycle import delete_entry
from provisioner.models import DownloadJob
from tests.helpers import blob, download, sha256

WEIGHTS = blob(2 * 1024 * 1024 + 5, seed=3)
CONFIG = b'{"model_type": "llama", "num_hidden_layers": 2}'
TOKENIZER = b'{"version": "1.0"}'


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@pytest.fixture
def repo(hub):
    return hub.add_repo(
        "acme/cached",
        {"config.json": CONFIG, "model.safetensors": WEIGHTS, "tokenizer/tokenizer.json": TOKENIZER},
        tags=["v1"],
    )


def cache_dir() -> Path:
    return Path(settings.RBEE_MODELS_DIR) / "hf-cache"


def test_it_lays_a_hugging_face_entry_out_as_the_hub_cache(hub, repo, hive):
    job = download("acme/cached", hive)
    assert job.state == DownloadJob.SUCCEEDED, job.error
    entry = job.entry
    folder = cache_dir() / "models--acme--cached"

    assert (folder / "refs" / "main").read_text() == repo
    assert sorted(p.name for p in (folder / "blobs").iterdir()) == sorted(
        [sha256(WEIGHTS), git_blob_id(CONFIG), git_blob_id(TOKENIZER)]
    )
    link = folder / "snapshots" / repo / "tokenizer" / "tokenizer.json"
    assert link.is_symlink() and os.readlink(link) == f"../../../blobs/{git_blob_id(TOKENIZER)}"
    assert os.readlink(folder / "snapshots" / repo / "model.safetensors") == f"../../blobs/{sha256(WEIGHTS)}"
    # No second copy of the bytes: the blob is the entry's file.
    blob_stat = (folder / "blobs" / sha256(WEIGHTS)).stat()
    assert blob_stat.st_ino == (Path(entry.path) / "model.safetensors").stat().st_ino


def test_it_lets_huggingface_hub_use_the_model_with_no_network(hub, repo, hive):
    download("acme/cached", hive)
    hub.stop()  # nothing may be asked of the hub from here on

    snapshot = Path(snapshot_download("acme/cached", cache_dir=cache_dir(), local_files_only=True))
    assert snapshot == cache_dir() / "models--acme--cached" / "snapshots" / repo
    assert (snapshot / "model.safetensors").read_bytes() == WEIGHTS
    assert (snapshot / "tokenizer" / "tokenizer.json").read_bytes() == TOKENIZER
    pinned = snapshot_download("acme/cached", revision=repo, cache_dir=cache_dir(), local_files_only=True)
    assert Path(pinned) == snapshot
    config = hf_hub_download("acme/cached", "config.json", cache_dir=cache_dir(), local_files_only=True)
    assert Path(config).read_bytes() == CONFIG

    info = scan_cache_dir(cache_dir())
    assert not info.warnings
    (cached,) = info.repos
    assert cached.repo_id == "acme/cached" and cached.repo_type == "model"
    assert cached.size_on_disk == len(WEIGHTS) + len(CONFIG) + len(TOKENIZER)
    (revision,) = cached.revisions
    assert revision.commit_hash == repo
    assert revision.refs == frozenset({"main"})
    assert revision.nb_files == 3


def test_it_names_a_tag_in_refs_and_keeps_shared_blobs_on_delete(hub, repo, hive):
    newer = hub.add_commit("acme/cached", {"config.json": b'{"model_type": "llama", "new": 1}'})
    old = download("acme/cached@v1", hive).entry
    new = download("acme/cached", hive).entry
    folder = cache_dir() / "models--acme--cached"
    assert (folder / "refs" / "v1").read_text() == repo
    assert (folder / "refs" / "main").read_text() == newer
    assert {r.commit_hash for r in next(iter(scan_cache_dir(cache_dir()).repos)).revisions} == {repo, newer}

    delete_entry(old)

    assert not (folder / "snapshots" / repo).exists()
    assert not (folder / "refs" / "v1").exists()
    assert not (folder / "blobs" / git_blob_id(CONFIG)).exists()
    # The weights are the same in both commits: their blob stays, now the surviving entry's file.
    weights_blob = folder / "blobs" / sha256(WEIGHTS)
    assert weights_blob.stat().st_ino == (Path(new.path) / "model.safetensors").stat().st_ino
    snapshot = snapshot_download("acme/cached", cache_dir=cache_dir(), local_files_only=True)
    assert (Path(snapshot) / "model.safetensors").read_bytes() == WEIGHTS
    assert not scan_cache_dir(cache_dir()).warnings

    delete_entry(new)
    assert not folder.exists()
    assert ModelEntry.objects.count() == 0


def test_it_tells_the_engine_line_on_the_entry_page_and_the_api(hub, repo, hive, alice_client):
    entry = download("acme/cached", hive).entry
    (line,) = engine_lines(entry)
    expected = f"HF_HUB_CACHE={cache_dir()} HF_HUB_OFFLINE=1 vllm serve acme/cached --revision {repo}"
    assert line == {"engine": "vLLM", "line": expected}
    assert expected in alice_client.get(f"/models/{entry.pk}/").content.decode()
    data = alice_client.get(f"/api/models/{entry.pk}/").json()
    assert data["engines"] == [line]
    assert data["metadata"]["architecture"] == "llama"
    assert json.dumps(data["metadata"])


OLLAMA = "application/vnd.ollama.image."


@pytest.fixture(scope="module")
def registry():
    from tests.servers.registry import OciRegistry

    with OciRegistry() as running:
        yield running


@pytest.mark.slow
def test_it_lays_an_ollama_entry_out_as_ollamas_own_store(registry, settings, hive, alice_client):
    from tests.model_files import tiny_gguf

    settings.RBEE_OLLAMA_REGISTRY = registry.url
    weights = tiny_gguf(layers=3, heads=4, kv_heads=4, embedding=32, context=2048)
    layers = [(OLLAMA + "model", weights), (OLLAMA + "template", b"{{ .Prompt }}"), (OLLAMA + "params", b"{}")]
    digest = registry.push_ollama_model("library", "tiny", "latest", layers)

    job = download("ollama:tiny", hive)

    assert job.state == DownloadJob.SUCCEEDED, job.error
    entry = job.entry
    folder = Path(entry.path)
    store = Path(settings.RBEE_MODELS_DIR) / "ollama-store"
    host = registry.url.removeprefix("http://")
    manifest_path = store / "manifests" / host / "library" / "tiny" / "latest"
    raw = manifest_path.read_bytes()
    assert "sha256:" + sha256(raw) == digest
    manifest = json.loads(raw)
    expected_blobs = {d["digest"].replace(":", "-") for d in [*manifest["layers"], manifest["config"]]}
    found = {str(p.relative_to(store)) for p in store.rglob("*") if p.is_file()}
    assert found == {f"manifests/{host}/library/tiny/latest"} | {f"blobs/{name}" for name in expected_blobs}
    for descriptor in [*manifest["layers"], manifest["config"]]:
        blob_file = store / "blobs" / descriptor["digest"].replace(":", "-")
        assert sha256(blob_file.read_bytes()) == descriptor["digest"].removeprefix("sha256:")
        assert blob_file.stat().st_size == descriptor["size"]
    assert (store / "blobs" / f"sha256-{sha256(weights)}").stat().st_ino == (folder / "model.gguf").stat().st_ino

    assert entry.metadata["architecture"] == "llama"
    assert entry.metadata["layers"] == 3 and entry.metadata["context_length"] == 2048
    lines = {line["engine"]: line["line"] for line in engine_lines(entry)}
    assert lines["Ollama"] == f"OLLAMA_MODELS={store} ollama run {host}/library/tiny:latest"
    assert lines["llama.cpp"] == f"llama-server -m {folder / 'model.gguf'}"

    delete_entry(entry)
    assert not any(p.is_file() for p in store.rglob("*"))


@pytest.mark.slow
def test_it_keeps_a_blob_another_ollama_tag_still_uses(registry, settings, hive):
    settings.RBEE_OLLAMA_REGISTRY = registry.url
    weights = blob(64 * 1024, seed=21)
    registry.push_ollama_model("library", "shared", "a", [(OLLAMA + "model", weights), (OLLAMA + "params", b"{}")])
    registry.push_ollama_model("library", "shared", "b", [(OLLAMA + "model", weights), (OLLAMA + "params", b"{ }")])
    first = download("ollama:shared:a", hive).entry
    second = download("ollama:shared:b", hive).entry
    store = Path(settings.RBEE_MODELS_DIR) / "ollama-store"
    host = registry.url.removeprefix("http://")
    weights_blob = store / "blobs" / f"sha256-{sha256(weights)}"

    delete_entry(first)

    assert not (store / "manifests" / host / "library" / "shared" / "a").exists()
    assert (store / "manifests" / host / "library" / "shared" / "b").is_file()
    assert not (store / "blobs" / f"sha256-{sha256(b'{}')}").exists()
    assert (store / "blobs" / f"sha256-{sha256(b'{ }')}").exists()
    # Re-pointed at the surviving entry's file: still one copy of the weights.
    assert weights_blob.stat().st_ino == (Path(second.path) / "model.gguf").stat().st_ino

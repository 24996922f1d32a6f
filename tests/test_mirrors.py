"""Mirrors that differ from the Hub, and endpoints tried in order when one is down."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from huggingface_hub import snapshot_download

from provisioner.models import Action, DownloadJob
from tests.helpers import download, sha256
from tests.model_files import safetensors
from tests.servers.fakehub import FakeHub

CONFIG = json.dumps({"model_type": "qwen2", "num_hidden_layers": 2, "num_attention_heads": 4,
                     "num_key_value_heads": 2, "hidden_size": 64, "max_position_embeddings": 2048}).encode()  # fmt: skip


WEIGHTS = safetensors({"embed.weight": ("BF16", [128, 64]), "lm_head.weight": ("F32", [128, 64])}, pad=1024 * 1024)


@pytest.fixture
def mirror(settings) -> Iterator[FakeHub]:
    with FakeHub(mirror=True) as fake:
        settings.HF_ENDPOINT = fake.url
        yield fake


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def narration(job: DownloadJob) -> list[str]:
    return list(job.events.order_by("seq").values_list("human", flat=True))


def test_it_downloads_through_a_mirror_whose_listing_has_no_sizes(mirror, hive):
    commit = mirror.add_repo("acme/mirrored", {"config.json": CONFIG, "model.safetensors": WEIGHTS})
    listing = mirror.requests  # nothing yet
    assert listing == []

    job = download("acme/mirrored", hive)

    assert job.state == DownloadJob.SUCCEEDED, job.error
    entry = job.entry
    assert entry.revision == commit
    assert (Path(entry.path) / "model.safetensors").read_bytes() == WEIGHTS
    rows = {f.path: f for f in entry.files.all()}
    assert rows["model.safetensors"].sha256 == sha256(WEIGHTS)
    # Sizes and hashes came from the files' own HEAD answers (the relative redirect followed).
    assert any(r.method == "HEAD" and r.path.startswith("/mirror-lfs/") for r in mirror.requests)
    plan = job.plan
    weights = next(f for f in plan["files"] if f["path"] == "model.safetensors")
    assert weights["size"] == len(WEIGHTS) and weights["sha256"] == sha256(WEIGHTS)
    assert plan["extra"]["git_blob_ids"]["config.json"]
    # Range is ignored by this mirror, and the download did not mind.
    assert not [r for r in mirror.requests if r.status == 206]
    # What was read at install: the safetensors header from the disk, the config.
    assert entry.metadata["parameters"] == 2 * 128 * 64
    assert entry.metadata["dtypes"] == {"BF16": 128 * 64, "F32": 128 * 64}
    assert entry.metadata["layers"] == 2 and entry.metadata["kv_heads"] == 2
    cache = Path(settings.RBEE_MODELS_DIR) / "hf-cache"
    mirror.stop()
    snapshot = Path(snapshot_download("acme/mirrored", cache_dir=cache, local_files_only=True))
    assert (snapshot / "config.json").read_bytes() == CONFIG


def test_it_tries_the_next_endpoint_when_the_first_is_down(hub, hive, settings):
    hub.add_repo("acme/fallback", {"config.json": CONFIG})
    down = closed_port_url()
    settings.RBEE_HF_ENDPOINTS = [down, hub.url]

    job = download("acme/fallback", hive)

    assert job.state == DownloadJob.SUCCEEDED, job.error
    told = [h for h in narration(job) if "is down" in h]
    assert told and down in told[0] and f"trying {hub.url}" in told[0]
    assert job.events.filter(action=Action.RETRY, human=told[0]).exists()
    assert all(f["url"].startswith(hub.url) for f in job.plan["files"])


def test_it_tries_the_next_endpoint_when_the_first_answers_5xx(hub, hive, settings):
    hub.add_repo("acme/fallback", {"config.json": CONFIG})
    with FakeHub() as broken:
        broken.set_api_statuses([503] * 10)
        settings.RBEE_HF_ENDPOINTS = [broken.url, hub.url]
        job = download("acme/fallback", hive)
    assert job.state == DownloadJob.SUCCEEDED, job.error
    assert any("503" in h and "is down" in h for h in narration(job))


def test_it_takes_a_404_from_a_working_mirror_as_the_answer(hub, mirror, hive, settings):
    hub.add_repo("acme/only-on-the-hub", {"config.json": CONFIG})
    settings.RBEE_HF_ENDPOINTS = [mirror.url, hub.url]

    job = download("acme/only-on-the-hub", hive)

    assert job.state == DownloadJob.FAILED
    assert job.error_kind == "repo_not_found"
    assert mirror.url in job.error


def test_it_says_so_when_every_endpoint_is_down(hive, settings):
    settings.RBEE_HF_ENDPOINTS = [closed_port_url(), closed_port_url()]
    job = download("acme/nowhere", hive)
    assert job.state == DownloadJob.FAILED
    assert "every configured endpoint is down" in job.error


def test_it_uses_the_hives_own_endpoints(hub, hive, settings):
    hub.add_repo("acme/per-hive", {"config.json": CONFIG})
    settings.RBEE_HF_ENDPOINTS = []
    settings.HF_ENDPOINT = closed_port_url()
    hive.hf_endpoints = [closed_port_url(), hub.url]
    hive.save(update_fields=["hf_endpoints"])

    job = download("acme/per-hive", hive)

    assert job.state == DownloadJob.SUCCEEDED, job.error

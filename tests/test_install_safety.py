"""No reference can make an install or a delete touch another entry's files.

Found by an attack on loopback: ``http://HOST/a/../../..`` downloaded, then removed the
whole models dir; ``…/x/../../../huggingface/org/name`` replaced another entry's files;
two URLs that differ only in the query string shared one folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.db import transaction

from catalog.models import ModelEntry
from provisioner.models import DownloadJob
from provisioner.references import UnsupportedReference, parse_reference
from tests.helpers import blob, download, files_below, wait_finished
from tests.servers.faults import FaultServer

WEIGHTS = blob(64 * 1024 + 7, seed=5)


@pytest.fixture
def files() -> FaultServer:
    with FaultServer() as server:
        server.add_file("a/model.gguf", WEIGHTS)
        yield server


@pytest.mark.parametrize(
    "path",
    [
        "/a/../../..",
        "/x/../../../huggingface/org/name",
        "/a/./model.gguf",
        "/a/%2e%2e/%2E%2E/model.gguf",
        "/a/%2e/model.gguf",
        "/a/..%2fmodel.gguf",
    ],
)
def test_it_refuses_dot_segments_in_a_url_before_anything_runs(alice_client, hive, files, path):
    reference = files.url + path

    with pytest.raises(UnsupportedReference):
        parse_reference(reference)
    response = alice_client.post("/api/jobs/", {"model": reference}, content_type="application/json")

    assert response.status_code == 400
    assert not DownloadJob.objects.exists()
    assert files.requests == []


@pytest.mark.parametrize(
    "text",
    [
        "org/name@refs/../main",
        "org/name@%2e%2e",
        "org/name:../x.gguf",
        "org/name:sub/../../x.gguf",
        "org/name:%2e%2e/x",
        "file:/srv/models/../../etc/passwd",
        "file:/srv/./models/x.gguf",
        "ollama:../llama3",
        "ollama:a..b/llama3",
    ],
)
def test_it_refuses_dot_segments_for_every_vendor(text):
    with pytest.raises(UnsupportedReference):
        parse_reference(text)


def test_two_urls_that_differ_in_query_or_digest_never_share_a_folder():
    texts = [
        "https://example.com/a/model.gguf",
        "https://example.com/a/model.gguf?v=2",
        "https://example.com/a/model.gguf#sha256=" + "a" * 64,
        "https://example.com/b/model.gguf",
        "https://example.com/a_b/c.gguf",
        "https://example.com/a/b_c.gguf",
    ]
    folders = [parse_reference(t).folder for t in texts]

    assert len(set(folders)) == len(texts)
    # Every URL entry sits at the same depth, so none can be inside another's folder.
    assert {len(f.split("/")) for f in folders} == {3}


def test_lossy_folder_names_stay_apart():
    pairs = [
        ("org/name@a/b", "org/name@a_b"),
        ("org/name:Q4?K?M", "org/name:Q4_K_M"),
        ("file:/a/b_c", "file:/a_b/c"),
    ]
    for one, other in pairs:
        assert parse_reference(one).folder != parse_reference(other).folder


def test_deleting_one_url_entry_keeps_the_other(alice_client, hive, files):
    first = download(files.url_for("a/model.gguf"), hive)
    second = download(files.url_for("a/model.gguf") + "?v=2", hive)
    assert first.state == second.state == DownloadJob.SUCCEEDED, (first.error, second.error)
    assert first.entry.path != second.entry.path

    response = alice_client.post(f"/models/{first.entry.pk}/delete/")

    assert response.status_code == 303
    assert not Path(first.entry.path).exists()
    assert (Path(second.entry.path) / "model.gguf").read_bytes() == WEIGHTS
    assert ModelEntry.objects.filter(pk=second.entry.pk).exists()


def test_an_install_never_replaces_a_folder_it_does_not_own(hive, files, settings):
    reference = files.url_for("a/model.gguf")
    squatter = Path(settings.RBEE_MODELS_DIR) / parse_reference(reference).folder
    squatter.mkdir(parents=True)
    (squatter / "precious.bin").write_bytes(b"not ours")

    job = download(reference, hive)

    assert job.state == DownloadJob.SUCCEEDED, job.error
    assert (squatter / "precious.bin").read_bytes() == b"not ours"
    assert Path(job.entry.path) != squatter
    assert (Path(job.entry.path) / "model.gguf").read_bytes() == WEIGHTS


def test_an_install_removes_a_leftover_of_its_own_job(hive, files, settings):
    """A crash after the move left this job's marker: that folder is the job's to replace."""
    reference = files.url_for("a/model.gguf")
    job, _ = DownloadJob.submit(parse_reference(reference).canonical, hive, None)
    leftover = Path(settings.RBEE_MODELS_DIR) / parse_reference(reference).folder
    leftover.mkdir(parents=True)
    (leftover / ".rbee-install.json").write_text(json.dumps({"job": job.pk, "reference": job.reference}))
    (leftover / "model.gguf").write_bytes(b"half")

    with transaction.atomic():
        job.enqueue()
    job = wait_finished(job)

    assert job.state == DownloadJob.SUCCEEDED, job.error
    assert Path(job.entry.path) == leftover.resolve()
    assert files_below(leftover) == {"model.gguf"}


def test_delete_refuses_a_folder_that_holds_another_entry(hive, settings):
    root = Path(settings.RBEE_MODELS_DIR)
    outer = root / "url" / "example.com"
    inner = outer / "model.gguf~abc"
    inner.mkdir(parents=True)
    (inner / "model.gguf").write_bytes(b"x")
    holder = ModelEntry.objects.create(
        hive=hive, reference="https://example.com/x", name="x", vendor="url", path=str(outer), models_root=str(root)
    )
    ModelEntry.objects.create(
        hive=hive, reference="https://example.com/model.gguf", name="m", vendor="url", path=str(inner),
        models_root=str(root),
    )

    with pytest.raises(ValueError):
        holder.delete_files()
    assert (inner / "model.gguf").exists()


def test_delete_refuses_a_vendor_area_or_the_models_dir(hive, settings):
    root = Path(settings.RBEE_MODELS_DIR)
    (root / "url").mkdir(parents=True)
    for path in (root, root / "url", root.parent):
        entry = ModelEntry(hive=hive, reference=f"x{path}", name="x", vendor="url", path=str(path), models_root=str(root))
        with pytest.raises(ValueError):
            entry.delete_files()
    assert (root / "url").is_dir()

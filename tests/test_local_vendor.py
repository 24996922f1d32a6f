"""Importing local files and folders, only ever from below RBEE_IMPORT_ROOTS."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from catalog.models import ModelEntry
from provisioner.models import DownloadJob
from tests.helpers import actions, blob, download, files_below, sha256

WEIGHTS = blob(3 * 1024 * 1024 + 5, seed=21)
CONFIG = b'{"architectures": ["LlamaForCausalLM"]}'
SECRET = b"root:x:0:0:not for the catalog"


@pytest.fixture
def roots(tmp_path: Path, settings) -> Path:
    """One import root below tmp_path, on the same filesystem as the models dir."""
    root = tmp_path / "imports"
    root.mkdir()
    settings.RBEE_IMPORT_ROOTS = [root]
    return root


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    """A file outside every import root that no import may ever read."""
    path = tmp_path / "outside" / "secret.txt"
    path.parent.mkdir()
    path.write_bytes(SECRET)
    return path


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Content and mtime of every file, to prove an import left its source alone."""
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()
    }


def assert_refused(job: DownloadJob, kind: str, words: str, settings) -> None:
    assert job.state == DownloadJob.FAILED
    assert job.error_kind == kind, job.error
    assert words in job.error
    assert not ModelEntry.objects.exists()
    assert not [p for p in files_below(settings.RBEE_MODELS_DIR) if not p.startswith(".partial")]


def test_it_imports_a_file_as_a_hard_link_and_leaves_the_source_alone(roots, hive):
    source = roots / "llama" / "llama-Q4_K_M.gguf"
    source.parent.mkdir()
    source.write_bytes(WEIGHTS)
    before = snapshot(roots)

    job = download(f"file:{source}", hive)

    assert job.state == DownloadJob.SUCCEEDED, job.error
    entry = job.entry
    assert entry.vendor == "local"
    assert entry.reference == f"file:{source}"
    assert entry.linked is True
    assert entry.revision == ""
    target = Path(entry.path) / "llama-Q4_K_M.gguf"
    assert files_below(entry.path) == {"llama-Q4_K_M.gguf"}
    assert os.path.samefile(target, source)
    assert entry.files.get().sha256 == sha256(WEIGHTS)
    assert snapshot(roots) == before
    assert actions(job)[-1] == "model_download_complete"


def test_it_imports_a_nested_folder_with_a_checksum_for_every_file(roots, hive):
    model = roots / "my-model"
    (model / "tokenizer" / "extra").mkdir(parents=True)
    (model / "config.json").write_bytes(CONFIG)
    (model / "model.safetensors").write_bytes(WEIGHTS)
    (model / "tokenizer" / "tokenizer.json").write_bytes(b"{}")
    (model / "tokenizer" / "extra" / "merges.txt").write_bytes(b"a b\n")
    (model / "alias.json").symlink_to(model / "config.json")  # a link that stays inside the root is fine
    before = snapshot(roots)

    job = download(f"file:{model}/", hive)

    assert job.state == DownloadJob.SUCCEEDED, job.error
    entry = job.entry
    assert files_below(entry.path) == {
        "alias.json",
        "config.json",
        "model.safetensors",
        "tokenizer/tokenizer.json",
        "tokenizer/extra/merges.txt",
    }
    rows = {f.path: f for f in entry.files.all()}
    assert rows["model.safetensors"].sha256 == sha256(WEIGHTS)
    assert rows["alias.json"].sha256 == rows["config.json"].sha256 == sha256(CONFIG)
    assert rows["tokenizer/extra/merges.txt"].size_bytes == 4
    assert entry.size_bytes == len(WEIGHTS) + 2 * len(CONFIG) + 2 + 4
    assert not any(p.is_symlink() for p in Path(entry.path).rglob("*"))
    assert snapshot(roots) == before


def test_it_copies_with_progress_when_the_source_is_on_another_filesystem(tmp_path, settings, hive):
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs /dev/shm on a filesystem other than the models dir")
    root = shm / f"rbee-import-{os.getpid()}-{tmp_path.name}"
    root.mkdir()
    try:
        settings.RBEE_IMPORT_ROOTS = [root]
        source = root / "model.gguf"
        source.write_bytes(WEIGHTS)

        job = download(f"file:{source}", hive)

        assert job.state == DownloadJob.SUCCEEDED, job.error
        target = Path(job.entry.path) / "model.gguf"
        assert job.entry.linked is False
        assert not os.path.samefile(target, source)
        assert target.read_bytes() == WEIGHTS == source.read_bytes()
        assert job.entry.files.get().sha256 == sha256(WEIGHTS)
        assert "model_download_file_done" in actions(job)
    finally:
        for path in root.iterdir():
            path.unlink()
        root.rmdir()


def test_it_refuses_a_folder_with_a_link_that_escapes_the_roots(roots, secret, hive, settings):
    model = roots / "sneaky"
    model.mkdir()
    (model / "config.json").write_bytes(CONFIG)
    (model / "weights.gguf").symlink_to(secret)

    job = download(f"file:{model}", hive)

    assert_refused(job, "outside_import_roots", "outside the import roots", settings)
    assert "weights.gguf" in job.error
    assert secret.read_bytes() == SECRET


def test_it_refuses_a_linked_folder_that_escapes_the_roots(roots, secret, hive, settings):
    model = roots / "sneaky"
    model.mkdir()
    (model / "etc").symlink_to(secret.parent, target_is_directory=True)

    job = download(f"file:{model}", hive)

    assert_refused(job, "outside_import_roots", "outside the import roots", settings)


def test_it_refuses_a_path_that_is_itself_a_link_out_of_the_roots(roots, secret, hive, settings):
    link = roots / "model.gguf"
    link.symlink_to(secret)

    job = download(f"file:{link}", hive)

    assert_refused(job, "outside_import_roots", str(secret), settings)


def test_it_refuses_dot_dot_before_resolving_anything(roots, secret, hive, settings):
    job = download(f"file:{roots}/../outside/secret.txt", hive)
    assert_refused(job, "unsupported", "'.' or '..' segments", settings)


def test_it_refuses_a_missing_path(roots, hive, settings):
    job = download(f"file:{roots}/no/such/model.gguf", hive)
    assert_refused(job, "not_found", "does not exist", settings)


def test_it_refuses_a_pipe_in_a_folder(roots, hive, settings):
    model = roots / "odd"
    model.mkdir()
    (model / "config.json").write_bytes(CONFIG)
    os.mkfifo(model / "weights.gguf")

    job = download(f"file:{model}", hive)

    assert_refused(job, "not_a_file", "not a regular file", settings)


def test_it_refuses_a_folder_that_links_back_to_itself(roots, hive, settings):
    model = roots / "loop"
    model.mkdir()
    (model / "config.json").write_bytes(CONFIG)
    (model / "again").symlink_to(model, target_is_directory=True)

    job = download(f"file:{model}", hive)

    assert_refused(job, "not_a_file", "loop", settings)


def test_it_refuses_to_import_the_models_dir_itself(tmp_path, hive, settings):
    settings.RBEE_IMPORT_ROOTS = [tmp_path]
    (tmp_path / "imports").mkdir()
    (tmp_path / "imports" / "model.gguf").write_bytes(b"GGUF")

    job = download(f"file:{tmp_path}", hive)

    assert_refused(job, "outside_import_roots", "overlaps the models dir", settings)


def test_it_refuses_on_the_form_when_imports_are_disabled(alice_client, hive, settings, tmp_path):
    settings.RBEE_IMPORT_ROOTS = []
    (tmp_path / "model.gguf").write_bytes(b"GGUF")

    response = alice_client.post("/jobs/", {"model": f"file:{tmp_path}/model.gguf"})

    assert response.status_code == 400
    assert "file: imports are disabled: set RBEE_IMPORT_ROOTS" in response.content.decode()
    assert not DownloadJob.objects.exists()


def test_it_refuses_on_the_form_a_path_outside_the_roots(alice_client, roots, secret, hive):
    response = alice_client.post("/jobs/", {"model": f"file:{secret}"})

    assert response.status_code == 400
    assert "is outside the import roots" in response.content.decode()
    assert not DownloadJob.objects.exists()


def test_it_refuses_a_job_queued_before_imports_were_disabled(roots, hive, settings):
    source = roots / "model.gguf"
    source.write_bytes(b"GGUF")
    settings.RBEE_IMPORT_ROOTS = []

    job = download(f"file:{source}", hive)

    assert_refused(job, "import_disabled", "RBEE_IMPORT_ROOTS", settings)

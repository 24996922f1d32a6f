"""``manage.py models …`` and ``manage.py jobs …`` as a shell-first admin runs them:
real processes on a migrated data dir, downloading from the fake hub."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.helpers import blob, sha256
from tests.live import LiveDashboard

pytestmark = pytest.mark.slow

WEIGHTS = blob(3 * 1024 * 1024 + 5, seed=41)


@pytest.fixture(scope="module")
def migrated(tmp_path_factory) -> Path:
    """A data dir migrated once for the module: each test starts from a copy."""
    data = tmp_path_factory.mktemp("migrated") / "data"
    LiveDashboard(data).setup()
    return data


@pytest.fixture
def shell(hub, tmp_path, migrated) -> LiveDashboard:
    """A migrated data dir and the environment `make run` would have; no server needed."""
    hub.add_repo("acme/cli", {"config.json": b"{}", "model.safetensors": WEIGHTS})
    shutil.copytree(migrated, tmp_path / "data")
    return LiveDashboard(tmp_path / "data", env={"HF_ENDPOINT": hub.url})


def test_it_pulls_with_a_progress_story_and_lists_shows_and_removes(shell):
    pulled = shell.manage("models", "pull", "acme/cli", check=False)
    assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    assert "Queued job #1" in pulled.stdout and "downloaded successfully" in pulled.stdout
    path = Path(pulled.stdout.split("Ready: ")[1].strip())
    assert sha256((path / "model.safetensors").read_bytes()) == sha256(WEIGHTS)

    listed = json.loads(shell.manage("models", "ls", "--json").stdout)
    assert [(e["reference"], e["size_bytes"]) for e in listed] == [("hf:acme/cli", len(WEIGHTS) + 2)]
    shown = json.loads(shell.manage("models", "show", "hf:acme/cli", "--json").stdout)
    assert {f["path"]: f["sha256"] for f in shown["files"]}["model.safetensors"] == sha256(WEIGHTS)
    assert "acme/cli" in shell.manage("models", "ls").stdout
    assert "succeeded" in shell.manage("jobs", "ls").stdout

    removed = shell.manage("models", "rm", str(shown["id"]))
    assert "Deleted acme/cli" in removed.stdout
    assert not path.exists()
    assert json.loads(shell.manage("models", "ls", "--json").stdout) == []


def test_a_failed_pull_exits_non_zero_with_the_reason(shell):
    missing = shell.manage("models", "pull", "acme/missing", check=False)
    assert missing.returncode != 0
    assert "not found" in missing.stderr
    assert "No jobs" in shell.manage("jobs", "ls").stdout  # refused before a job was made

    unsupported = shell.manage("models", "pull", "just-a-word", check=False)
    assert unsupported.returncode != 0 and "Supported forms" in unsupported.stderr


def test_jobs_cancel_cancels_a_queued_job_and_refuses_a_finished_one(shell):
    queued = shell.manage("models", "pull", "acme/cli", "--hive", "local", "--no-follow")
    assert "Queued job #1" in queued.stdout
    assert "cancelled" in shell.manage("jobs", "cancel", "1").stdout
    again = shell.manage("jobs", "cancel", "1", check=False)
    assert again.returncode != 0 and "only a queued or running job" in again.stderr
    assert "cancelled" in shell.manage("jobs", "ls", "--state", "cancelled").stdout


def test_unknown_entries_and_hives_are_named(shell):
    assert "no catalog entry" in shell.manage("models", "show", "42", check=False).stderr
    assert "no hive named 'mars'" in shell.manage("models", "pull", "acme/cli", "--hive", "mars", check=False).stderr

"""The vendor interface says everything a vendor does, and the transfer does what its signature says."""

from __future__ import annotations

import ast
import threading
import typing
from collections.abc import Callable
from pathlib import Path

import pytest

from provisioner.references import parse_reference
from provisioner.vendors import all_vendors, base
from provisioner.vendors.base import Cancelled, FetchResult, PlannedFile, VerificationError
from provisioner.vendors.local import LocalVendor
from provisioner.vendors.transfer import fetch_file
from tests.helpers import blob, sha256
from tests.servers.faults import FaultServer

DATA = blob(200_000, seed=3)
VENDORS_DIR = Path(base.__file__).parent


class Recorder:
    """A Progress that remembers what it was told."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[object, ...]]] = []

    def advance(self, path: str, file_bytes: int) -> None:
        pass

    def file_done(self, path: str, size: int, sha256: str) -> None:
        self.calls.append(("file_done", (path, size, sha256)))

    def retry(self, path: str, reason: str, attempt: int, delay_s: float) -> None:
        self.calls.append(("retry", (path, reason)))

    def resumed(self, path: str, offset: int) -> None:
        self.calls.append(("resumed", (path, offset)))

    def restarted(self, path: str, reason: str) -> None:
        self.calls.append(("restarted", (path, reason)))


class Token:
    """A CancelToken, as the protocol states it: asked, waited on, hooked."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.waits: list[float] = []

    def __call__(self) -> bool:
        return self.event.is_set()

    def wait(self, seconds: float) -> bool:
        self.waits.append(seconds)
        return self.event.is_set()

    def on_cancel(self, callback: Callable[[], None]) -> Callable[[], None]:
        return lambda: None


def test_every_vendor_states_the_whole_interface():
    for vendor in all_vendors():
        for name in ("supports", "validate", "plan", "fetch"):
            assert callable(getattr(type(vendor), name, None)), f"{type(vendor).__name__}.{name}"
        hints = typing.get_type_hints(type(vendor).fetch)
        assert hints["return"] is FetchResult, type(vendor).__name__
    assert "validate" in base.Vendor.__dict__
    assert "wait" in base.CancelToken.__dict__


def test_vendors_know_no_models():
    """Layers run one way: a vendor talks to a source and to the disk, never to the database."""
    for path in VENDORS_DIR.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.endswith(".models"), f"{path.name} imports {node.module}"
                assert not node.module.startswith(("django.db", "catalog")), f"{path.name} imports {node.module}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    assert not alias.name.startswith(("django.db", "catalog")), f"{path.name} imports {alias.name}"


def test_a_local_import_reports_links_in_its_result_not_in_the_plan(settings, tmp_path):
    root = tmp_path / "imports"
    root.mkdir()
    (root / "m.gguf").write_bytes(DATA)
    settings.RBEE_IMPORT_ROOTS = [root]
    vendor = LocalVendor()
    plan = vendor.plan(parse_reference(f"file:{root}/m.gguf"))
    extra = dict(plan.extra)
    dest = tmp_path / "dest"

    result = vendor.fetch(plan, dest, Recorder(), Token())

    assert result == FetchResult(sha256={"m.gguf": sha256(DATA)}, linked=True)
    assert plan.extra == extra  # the plan is what was planned, never rewritten by fetch


@pytest.fixture
def files():
    with FaultServer() as server:
        server.add_file("m.bin", DATA)
        yield server


def planned(files: FaultServer) -> PlannedFile:
    return PlannedFile(path="m.bin", size=len(DATA), sha256=sha256(DATA), url=files.url_for("m.bin"))


def test_a_vendor_check_that_fails_once_fetches_the_file_again(files, tmp_path):
    verdicts = iter(["the blob id is wrong", None])
    progress = Recorder()

    digest = fetch_file(planned(files), tmp_path, progress, Token(), verify=lambda path: next(verdicts))

    assert digest == sha256(DATA)
    assert len(files.gets("m.bin")) == 2
    assert ("restarted", ("m.bin", "verification failed (the blob id is wrong); downloading it again from scratch")) in (
        progress.calls
    )
    assert (tmp_path / "m.bin").read_bytes() == DATA


def test_a_vendor_check_that_never_passes_fails_and_leaves_nothing(files, tmp_path):
    with pytest.raises(VerificationError, match="the blob id is wrong .again after a fresh download."):
        fetch_file(planned(files), tmp_path, Recorder(), Token(), verify=lambda path: "the blob id is wrong")

    assert len(files.gets("m.bin")) == 2
    assert not (tmp_path / "m.bin").exists()


def test_the_headers_given_are_the_headers_sent(files, tmp_path):
    fetch_file(planned(files), tmp_path, Recorder(), Token(), headers={"Authorization": "Bearer t0k"})

    assert files.gets("m.bin")[0].authorization == "Bearer t0k"


class _CancelledDuringBackoff(Token):
    """Not cancelled when asked around the request; cancelled while the backoff waits."""

    def wait(self, seconds: float) -> bool:
        self.waits.append(seconds)
        return True


def test_a_retry_backs_off_on_the_cancel_token(files, tmp_path, settings):
    files.set_fault("m.bin", statuses=[500])
    token = _CancelledDuringBackoff()

    with pytest.raises(Cancelled):
        fetch_file(planned(files), tmp_path, Recorder(), token)

    assert token.waits == [settings.RBEE_RETRY_BACKOFF]

"""Prove the test servers behave: huggingface_hub works against FakeHub, and every FaultServer fault does what it says.

Plain pytest, no Django. Everything talks to 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from huggingface_hub import (
    HfApi,
    constants,
    get_hf_file_metadata,
    hf_hub_download,
    hf_hub_url,
    snapshot_download,
)
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import disable_progress_bars

from tests.servers.fakehub import FAKE_USER, FakeHub
from tests.servers.faults import Fault, FaultServer, RequestRecord

TOKEN = "hf_secret_test_token"
REPO = "org/model"
CONFIG = b'{"model_type": "test"}'
README = b"# test model\n"
WEIGHTS = os.urandom(3 * 1024 * 1024 + 17)  # LFS by size and by name
NESTED = b"nested tokenizer data"
BODY = bytes(range(256)) * 40  # 10240 bytes with a known pattern


@pytest.fixture(autouse=True)
def _hf_client_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make sure no ambient token or offline flag changes what the client sends."""
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    disable_progress_bars()


@pytest.fixture
def file_server() -> Iterator[FaultServer]:
    with FaultServer() as server:
        server.add_file("files/body.bin", BODY)
        yield server


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub(token=TOKEN) as server:
        server.add_repo(
            REPO,
            {
                "config.json": CONFIG,
                "README.md": README,
                "model.safetensors": WEIGHTS,
                "tokenizer/vocab.txt": NESTED,
            },
            tags=["v1.0"],
        )
        yield server


@pytest.fixture
def api(hub: FakeHub) -> HfApi:
    return HfApi(endpoint=hub.url, token=False)


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "hf-cache"


_connections: list[http.client.HTTPConnection] = []


@pytest.fixture(autouse=True)
def _close_raw_connections() -> Iterator[None]:
    yield
    while _connections:
        _connections.pop().close()


def _get(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> http.client.HTTPResponse:
    """One request on a fresh connection, returning the response with its body unread.

    http.client (unlike httpx2) hands back whatever arrived before a connection
    dropped, which is what the fault tests need to look at.
    """
    without_scheme = url.removeprefix("http://")
    host, _, path = without_scheme.partition("/")
    conn = http.client.HTTPConnection(host, timeout=5)
    _connections.append(conn)
    conn.request(method, "/" + path, headers=headers or {})
    return conn.getresponse()


def _wait_for(predicate, timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


# --------------------------------------------------------------------------- FaultServer


def test_serves_file_with_expected_headers_and_head(file_server: FaultServer) -> None:
    url = file_server.url_for("files/body.bin")
    response = _get(url)
    assert response.status == 200
    assert response.read() == BODY
    assert response.headers["Content-Length"] == str(len(BODY))
    assert response.headers["ETag"] == f'"{hashlib.sha256(BODY).hexdigest()}"'
    assert response.headers["Accept-Ranges"] == "bytes"
    assert response.headers["Content-Type"] == "application/octet-stream"

    head = _get(url, method="HEAD")
    assert head.status == 200
    assert head.headers["Content-Length"] == str(len(BODY))
    assert head.read() == b""

    assert _get(file_server.url + "/nope").status == 404
    assert file_server.wait_idle()
    records = file_server.requests
    assert [(r.method, r.path, r.status, r.done) for r in records] == [
        ("GET", "/files/body.bin", 200, True),
        ("HEAD", "/files/body.bin", 200, True),
        ("GET", "/nope", 404, True),
    ]
    assert records[0].bytes_sent == len(BODY)
    assert len(file_server.gets("files/body.bin")) == 1


def test_range_requests(file_server: FaultServer) -> None:
    url = file_server.url_for("files/body.bin")
    size = len(BODY)

    open_ended = _get(url, {"Range": "bytes=10-"})
    assert open_ended.status == 206
    assert open_ended.headers["Content-Range"] == f"bytes 10-{size - 1}/{size}"
    assert open_ended.read() == BODY[10:]

    bounded = _get(url, {"Range": "bytes=10-19"})
    assert bounded.status == 206
    assert bounded.headers["Content-Range"] == f"bytes 10-19/{size}"
    assert bounded.read() == BODY[10:20]

    suffix = _get(url, {"Range": "bytes=-5"})
    assert suffix.status == 206
    assert suffix.read() == BODY[-5:]

    past_end = _get(url, {"Range": f"bytes={size}-"})
    assert past_end.status == 416
    assert past_end.headers["Content-Range"] == f"bytes */{size}"
    past_end.read()

    assert [r.range for r in file_server.gets("files/body.bin")] == [
        "bytes=10-",
        "bytes=10-19",
        "bytes=-5",
        f"bytes={size}-",
    ]


def test_large_file_from_disk_is_fast(file_server: FaultServer, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    chunk = os.urandom(1024 * 1024)
    with open(big, "wb") as f:
        for _ in range(64):
            f.write(chunk)
    file_server.add_file("big.bin", big)
    expected = hashlib.sha256(chunk * 64).hexdigest()

    started = time.monotonic()
    digest = hashlib.sha256()
    with httpx2.stream("GET", file_server.url_for("big.bin")) as response:
        assert response.headers["ETag"] == f'"{expected}"'
        for part in response.iter_bytes(1024 * 1024):
            digest.update(part)
    assert digest.hexdigest() == expected
    assert time.monotonic() - started < 5

    ranged = httpx2.get(file_server.url_for("big.bin"), headers={"Range": f"bytes={63 * 1024 * 1024}-"})
    assert ranged.status_code == 206
    assert ranged.content == chunk


def test_drop_after_closes_mid_body_then_recovers(file_server: FaultServer) -> None:
    url = file_server.url_for("files/body.bin")
    file_server.set_fault("files/body.bin", drop_after=1000, drop_times=2)

    response = _get(url)
    assert response.status == 200
    with pytest.raises(http.client.IncompleteRead) as excinfo:
        response.read()
    assert excinfo.value.partial == BODY[:1000]

    with pytest.raises(httpx2.RemoteProtocolError):
        httpx2.get(url)

    assert httpx2.get(url).content == BODY
    assert file_server.wait_idle()
    assert [r.bytes_sent for r in file_server.gets("files/body.bin")] == [1000, 1000, len(BODY)]


def test_drop_counts_body_bytes_of_a_range_response(file_server: FaultServer) -> None:
    file_server.set_fault("files/body.bin", drop_after=100)
    response = _get(file_server.url_for("files/body.bin"), {"Range": "bytes=5000-"})
    assert response.status == 206
    with pytest.raises(http.client.IncompleteRead) as excinfo:
        response.read()
    assert excinfo.value.partial == BODY[5000:5100]


def test_ignore_range_answers_full_body(file_server: FaultServer) -> None:
    file_server.set_fault("files/body.bin", ignore_range=True)
    response = _get(file_server.url_for("files/body.bin"), {"Range": "bytes=100-"})
    assert response.status == 200
    assert "Accept-Ranges" not in response.headers
    assert "Content-Range" not in response.headers
    assert response.read() == BODY


def test_statuses_are_answered_in_order_then_file_is_served(file_server: FaultServer) -> None:
    url = file_server.url_for("files/body.bin")
    file_server.set_fault("files/body.bin", statuses=[500, (429, {"Retry-After": "1"})])

    assert _get(url, method="HEAD").status == 200  # HEAD does not consume the queue
    first = httpx2.get(url)
    assert first.status_code == 500
    second = httpx2.get(url)
    assert second.status_code == 429
    assert second.headers["Retry-After"] == "1"
    third = httpx2.get(url)
    assert third.status_code == 200
    assert third.content == BODY
    assert [r.status for r in file_server.gets("files/body.bin")] == [500, 429, 200]


def test_stall_after_headers_sends_nothing_then_closes(file_server: FaultServer) -> None:
    url = file_server.url_for("files/body.bin")
    file_server.set_fault("files/body.bin", stall_after_headers=0.3)

    started = time.monotonic()
    response = _get(url)
    assert response.status == 200
    assert time.monotonic() - started < 0.25  # headers arrive before the stall
    with pytest.raises(http.client.IncompleteRead) as excinfo:
        response.read()
    assert excinfo.value.partial == b""
    assert time.monotonic() - started >= 0.3

    with pytest.raises(httpx2.ReadTimeout):  # how a client with a read timeout experiences it
        file_server.set_fault("files/body.bin", stall_after_headers=1.0)
        httpx2.get(url, timeout=httpx2.Timeout(5, read=0.2))

    assert httpx2.get(url).content == BODY  # stall_times=1: served normally afterwards


def test_flip_byte_corrupts_one_byte(file_server: FaultServer) -> None:
    url = file_server.url_for("files/body.bin")
    file_server.set_fault("files/body.bin", flip_byte_at=5000, flip_times=1)

    # A range that does not contain the offset is clean and does not use up the flip.
    assert httpx2.get(url, headers={"Range": "bytes=6000-"}).content == BODY[6000:]
    assert file_server.get_fault("files/body.bin").flip_times == 1

    corrupted = httpx2.get(url).content
    assert len(corrupted) == len(BODY)
    assert corrupted[5000] == BODY[5000] ^ 0xFF
    assert corrupted[:5000] == BODY[:5000] and corrupted[5001:] == BODY[5001:]
    assert httpx2.get(url).content == BODY

    file_server.set_fault("files/body.bin", Fault(flip_byte_at=0))  # flip_times=None: every time
    assert httpx2.get(url).content[0] == BODY[0] ^ 0xFF
    assert httpx2.get(url).content[0] == BODY[0] ^ 0xFF
    file_server.clear_faults("files/body.bin")
    assert httpx2.get(url).content == BODY


def test_content_disposition_header(file_server: FaultServer) -> None:
    file_server.set_fault("files/body.bin", content_disposition='attachment; filename="x.bin"')
    response = httpx2.get(file_server.url_for("files/body.bin"))
    assert response.headers["Content-Disposition"] == 'attachment; filename="x.bin"'


def test_throttle_limits_rate(file_server: FaultServer) -> None:
    file_server.set_fault("files/body.bin", throttle_bps=40_000)
    started = time.monotonic()
    assert httpx2.get(file_server.url_for("files/body.bin")).content == BODY
    elapsed = time.monotonic() - started
    assert 0.2 <= elapsed < 1.5  # 10240 bytes at 40 kB/s is ~0.26 s


def test_throttled_handler_stops_when_client_disconnects(file_server: FaultServer) -> None:
    file_server.add_file("slow.bin", b"\0" * 1_000_000)
    file_server.set_fault("slow.bin", throttle_bps=20_000)
    response = _get(file_server.url_for("slow.bin"))
    assert response.read(100) == b"\0" * 100
    response.close()
    _connections.pop().close()  # the client hangs up mid-body

    record = file_server.gets("slow.bin")[0]
    assert _wait_for(lambda: record.done, timeout=1.0)
    assert record.bytes_sent < 40_000


def test_stop_returns_quickly_during_throttled_download() -> None:
    server = FaultServer().start()
    server.add_file("slow.bin", b"\0" * 1_000_000)
    server.set_fault("slow.bin", throttle_bps=10_000)
    outcome: list[object] = []

    def download() -> None:
        try:
            outcome.append(httpx2.get(server.url_for("slow.bin"), timeout=10).status_code)
        except httpx2.HTTPError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=download, daemon=True)
    thread.start()
    assert _wait_for(lambda: any(r.bytes_sent > 0 for r in server.requests))

    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 2
    thread.join(timeout=2)
    assert not thread.is_alive()
    assert isinstance(outcome[0], httpx2.RemoteProtocolError | httpx2.ReadError)


def test_stop_returns_quickly_during_stall() -> None:
    server = FaultServer().start()
    server.add_file("f.bin", BODY)
    server.set_fault("f.bin", stall_after_headers=30)
    response = _get(server.url_for("f.bin"))
    assert response.status == 200
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 2
    with pytest.raises(http.client.IncompleteRead):
        response.read()


# --------------------------------------------------------------------------- FakeHub metadata


def test_model_info_with_files_metadata(hub: FakeHub, api: HfApi) -> None:
    info = api.model_info(REPO, files_metadata=True)
    assert info.id == REPO
    assert info.sha == hub.commit_sha(REPO)
    assert info.private is False
    assert info.gated is False
    assert info.last_modified is not None
    siblings = {s.rfilename: s for s in info.siblings}
    assert set(siblings) == {"config.json", "README.md", "model.safetensors", "tokenizer/vocab.txt"}
    assert siblings["config.json"].size == len(CONFIG)
    assert siblings["config.json"].lfs is None
    assert siblings["config.json"].blob_id == hashlib.sha1(b"blob %d\0" % len(CONFIG) + CONFIG).hexdigest()
    weights = siblings["model.safetensors"]
    assert weights.size == len(WEIGHTS)
    assert weights.lfs is not None
    assert weights.lfs.sha256 == hashlib.sha256(WEIGHTS).hexdigest()
    assert weights.lfs.size == len(WEIGHTS)
    assert weights.lfs.pointer_size > 0

    plain = api.model_info(REPO)
    assert all(s.size is None for s in plain.siblings)
    assert "safetensors" in plain.tags and plain.library_name == "transformers"


def test_list_repo_tree(hub: FakeHub, api: HfApi) -> None:
    entries = {e.path: e for e in api.list_repo_tree(REPO, recursive=True)}
    assert set(entries) == {"config.json", "README.md", "model.safetensors", "tokenizer", "tokenizer/vocab.txt"}
    assert type(entries["tokenizer"]).__name__ == "RepoFolder"
    assert entries["model.safetensors"].lfs.sha256 == hashlib.sha256(WEIGHTS).hexdigest()
    assert entries["model.safetensors"].size == len(WEIGHTS)
    assert entries["tokenizer/vocab.txt"].size == len(NESTED)

    top = {e.path for e in api.list_repo_tree(REPO)}
    assert top == {"config.json", "README.md", "model.safetensors", "tokenizer"}
    assert [e.path for e in api.list_repo_tree(REPO, "tokenizer")] == ["tokenizer/vocab.txt"]

    expanded = {e.path: e for e in api.list_repo_tree(REPO, recursive=True, expand=True)}
    assert expanded["config.json"].last_commit.oid == hub.commit_sha(REPO)
    assert expanded["config.json"].security.safe is True

    with pytest.raises(EntryNotFoundError):
        list(api.list_repo_tree(REPO, "missing-dir"))


def test_list_repo_tree_follows_link_pagination(api: HfApi, hub: FakeHub) -> None:
    hub.add_repo("org/many", {f"shard-{i:03d}.txt": b"x" for i in range(60)})
    paths = [e.path for e in api.list_repo_tree("org/many", expand=True)]  # 50 per page when expanded
    assert len(paths) == 60 and len(set(paths)) == 60
    assert len([r for r in hub.requests if "/tree/" in r.path]) == 2


def test_get_hf_file_metadata(hub: FakeHub) -> None:
    commit = hub.commit_sha(REPO)
    lfs = get_hf_file_metadata(hf_hub_url(REPO, "model.safetensors", endpoint=hub.url), token=False)
    assert lfs.commit_hash == commit
    assert lfs.size == len(WEIGHTS)
    assert lfs.etag == hashlib.sha256(WEIGHTS).hexdigest()
    assert lfs.location.startswith(hub.file_host.url)  # the 302 to the "CDN" is not followed
    assert lfs.location == hub.lfs_url(REPO, "model.safetensors")

    small = get_hf_file_metadata(hf_hub_url(REPO, "config.json", endpoint=hub.url), token=False)
    assert small.commit_hash == commit
    assert small.size == len(CONFIG)
    assert small.etag == hashlib.sha1(b"blob %d\0" % len(CONFIG) + CONFIG).hexdigest()
    assert small.location == hub.resolve_url(REPO, "config.json")


def test_refs(api: HfApi, hub: FakeHub) -> None:
    refs = api.list_repo_refs(REPO)
    assert [(b.name, b.target_commit) for b in refs.branches] == [("main", hub.commit_sha(REPO))]
    assert [t.name for t in refs.tags] == ["v1.0"]


# --------------------------------------------------------------------------- FakeHub downloads


def test_hf_hub_download_small_and_lfs(hub: FakeHub, cache_dir: Path) -> None:
    small = hf_hub_download(REPO, "config.json", endpoint=hub.url, cache_dir=cache_dir, token=False)
    assert Path(small).read_bytes() == CONFIG
    nested = hf_hub_download(REPO, "tokenizer/vocab.txt", endpoint=hub.url, cache_dir=cache_dir, token=False)
    assert Path(nested).read_bytes() == NESTED
    weights = hf_hub_download(REPO, "model.safetensors", endpoint=hub.url, cache_dir=cache_dir, token=False)
    assert Path(weights).read_bytes() == WEIGHTS

    # Small files come from the hub itself, LFS bytes from the file host.
    assert hub.wait_idle()
    assert [r.path for r in hub.gets(REPO, "config.json")] == [f"/{REPO}/resolve/main/config.json"]
    lfs_gets = hub.gets(REPO, "model.safetensors")
    assert len(lfs_gets) == 1 and lfs_gets[0].path.startswith("/lfs/")
    assert lfs_gets[0].bytes_sent == len(WEIGHTS)


def test_snapshot_download(hub: FakeHub, tmp_path: Path) -> None:
    folder = Path(snapshot_download(REPO, endpoint=hub.url, local_dir=tmp_path / "snap", token=False))
    assert (folder / "model.safetensors").read_bytes() == WEIGHTS
    assert (folder / "tokenizer" / "vocab.txt").read_bytes() == NESTED


def test_lfs_fault_reaches_hub_download_and_client_resumes(hub: FakeHub, cache_dir: Path, tmp_path: Path) -> None:
    # huggingface_hub writes in 10 MiB chunks, so it can only resume past the first full chunk.
    chunk = constants.DOWNLOAD_CHUNK_SIZE
    big = tmp_path / "big.safetensors"
    big.write_bytes(os.urandom(chunk + 2 * 1024 * 1024))
    hub.add_repo("org/big", {"model.safetensors": big})
    hub.set_fault("org/big", "model.safetensors", drop_after=chunk + 1024 * 1024)

    path = hf_hub_download("org/big", "model.safetensors", endpoint=hub.url, cache_dir=cache_dir, token=False)
    assert Path(path).read_bytes() == big.read_bytes()
    assert hub.wait_idle()
    assert [(r.range, r.status, r.bytes_sent) for r in hub.gets("org/big", "model.safetensors")] == [
        (None, 200, chunk + 1024 * 1024),
        (f"bytes={chunk}-", 206, 2 * 1024 * 1024),
    ]


def test_faults_on_small_files_are_applied_by_the_hub(hub: FakeHub) -> None:
    hub.set_fault(REPO, "config.json", flip_byte_at=0, flip_times=1)
    url = hub.resolve_url(REPO, "config.json")
    assert httpx2.get(url).content[0] == CONFIG[0] ^ 0xFF
    assert httpx2.get(url).content == CONFIG
    hub.set_fault(REPO, "config.json", statuses=[503])
    assert httpx2.get(url).status_code == 503
    assert httpx2.get(url, headers={"Range": "bytes=2-"}).content == CONFIG[2:]


def test_get_on_resolve_redirects_lfs_to_file_host(hub: FakeHub) -> None:
    response = httpx2.get(
        hub.resolve_url(REPO, "model.safetensors"), headers={"Range": "bytes=10-19"}, follow_redirects=True
    )
    assert response.status_code == 206
    assert response.content == WEIGHTS[10:20]
    assert response.history[0].status_code == 302
    assert response.history[0].headers["X-Repo-Commit"] == hub.commit_sha(REPO)
    assert 'filename="model.safetensors"' in response.headers["Content-Disposition"]


# --------------------------------------------------------------------------- FakeHub errors and revisions


def test_errors_map_to_huggingface_hub_exceptions(hub: FakeHub, api: HfApi, cache_dir: Path) -> None:
    hub.add_repo("org/gated", {"model.safetensors": b"secret weights"}, gated=True)

    def download(repo: str, filename: str, **kwargs: object) -> str:
        kwargs.setdefault("token", False)
        return hf_hub_download(repo, filename, endpoint=hub.url, cache_dir=cache_dir, **kwargs)

    with pytest.raises(RepositoryNotFoundError) as excinfo:
        api.model_info("org/missing")
    assert type(excinfo.value) is RepositoryNotFoundError
    assert excinfo.value.response.status_code == 401
    with pytest.raises(RepositoryNotFoundError) as excinfo:
        download("org/missing", "config.json")
    assert type(excinfo.value) is RepositoryNotFoundError

    with pytest.raises(RevisionNotFoundError):
        api.model_info(REPO, revision="no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        download(REPO, "config.json", revision="no-such-branch")

    with pytest.raises(EntryNotFoundError):
        download(REPO, "missing.json")
    with pytest.raises(EntryNotFoundError):
        get_hf_file_metadata(hf_hub_url(REPO, "missing.json", endpoint=hub.url), token=False)

    with pytest.raises(GatedRepoError) as excinfo:
        download("org/gated", "model.safetensors")
    assert excinfo.value.response.status_code == 401
    with pytest.raises(GatedRepoError) as excinfo:
        download("org/gated", "model.safetensors", token="hf_someone_else")
    assert excinfo.value.response.status_code == 403
    assert api.model_info("org/gated").gated == "manual"  # metadata is public, as on the Hub
    assert Path(download("org/gated", "model.safetensors", token=TOKEN)).read_bytes() == b"secret weights"
    # The client drops the token when following the redirect to the file host.
    resolve_head = [r for r in hub.requests if r.method == "HEAD"][-1]
    assert resolve_head.authorization == f"Bearer {TOKEN}"
    cdn_get = hub.gets("org/gated", "model.safetensors")[-1]
    assert cdn_get.path.startswith("/lfs/") and cdn_get.authorization is None


def test_private_repo_looks_missing_without_token(hub: FakeHub) -> None:
    hub.add_repo("org/private", {"a.txt": b"a"}, private=True)
    with pytest.raises(RepositoryNotFoundError):
        HfApi(endpoint=hub.url, token=False).model_info("org/private")
    assert HfApi(endpoint=hub.url, token=TOKEN).model_info("org/private").private is True


def test_whoami_accepts_only_the_hub_token(hub: FakeHub) -> None:
    assert HfApi(endpoint=hub.url).whoami(token=TOKEN)["name"] == FAKE_USER
    with pytest.raises(HfHubHTTPError) as excinfo:
        HfApi(endpoint=hub.url).whoami(token="hf_wrong")
    assert excinfo.value.response.status_code == 401


def test_api_statuses(hub: FakeHub, api: HfApi) -> None:
    hub.set_api_statuses([503])
    with pytest.raises(HfHubHTTPError) as excinfo:
        api.model_info(REPO)
    assert excinfo.value.response.status_code == 503
    assert api.model_info(REPO).id == REPO


def test_revisions_by_branch_tag_and_commit_sha(hub: FakeHub, api: HfApi, cache_dir: Path) -> None:
    first = hub.commit_sha(REPO)
    second = hub.add_commit(REPO, {"config.json": b'{"v": 2}'}, delete=["README.md"])
    third = hub.add_commit(REPO, {"config.json": b'{"v": "dev"}'}, branch="feature/x")
    assert len({first, second, third}) == 3
    assert all(len(sha) == 40 for sha in (first, second, third))

    assert api.model_info(REPO).sha == second
    assert api.model_info(REPO, revision="v1.0").sha == first
    assert api.model_info(REPO, revision=first).sha == first
    assert api.model_info(REPO, revision="feature/x").sha == third
    assert "README.md" not in {s.rfilename for s in api.model_info(REPO).siblings}

    def config_at(revision: str) -> bytes:
        path = hf_hub_download(
            REPO, "config.json", revision=revision, endpoint=hub.url, cache_dir=cache_dir, token=False
        )
        return Path(path).read_bytes()

    assert config_at("main") == b'{"v": 2}'
    assert config_at("v1.0") == CONFIG
    assert config_at(first) == CONFIG
    assert config_at("feature/x") == b'{"v": "dev"}'
    assert {e.path for e in api.list_repo_tree(REPO, revision=first)} >= {"README.md"}


def test_commit_shas_are_deterministic() -> None:
    with FakeHub() as one, FakeHub() as two:
        assert one.add_repo("a/b", {"f.txt": b"1"}) == two.add_repo("a/b", {"f.txt": b"1"})


def test_nasty_names_and_claimed_sizes_are_listed_verbatim(hub: FakeHub, api: HfApi) -> None:
    nasty = ["../evil.bin", "/abs.bin", "a\\b.bin"]
    hub.add_repo(
        "org/nasty",
        {name: b"x" for name in nasty} | {"ok.gguf": b"small"},
        claimed_sizes={"ok.gguf": 5 * 10**12, "huge.safetensors": 10**12},
    )
    siblings = {s.rfilename: s for s in api.model_info("org/nasty", files_metadata=True).siblings}
    assert set(nasty) <= set(siblings)
    assert siblings["ok.gguf"].size == 5 * 10**12
    assert siblings["huge.safetensors"].lfs.size == 10**12
    tree = {e.path for e in api.list_repo_tree("org/nasty", recursive=True)}
    assert set(nasty) <= tree
    meta = get_hf_file_metadata(hf_hub_url("org/nasty", "huge.safetensors", endpoint=hub.url), token=False)
    assert meta.size == 10**12
    with pytest.raises(ValueError):  # huggingface_hub's own traversal protection
        hf_hub_download("org/nasty", "../evil.bin", endpoint=hub.url, token=False)


def test_cli_serves_a_directory(tmp_path: Path) -> None:
    repo_dir = tmp_path / "repo"
    (repo_dir / "sub").mkdir(parents=True)
    (repo_dir / "config.json").write_bytes(CONFIG)
    (repo_dir / "sub" / "model.gguf").write_bytes(b"gguf bytes")
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.servers.fakehub", "--port", "0", "--repo", f"cli/model={repo_dir}"],
        cwd=Path(__file__).resolve().parents[1],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = process.stdout.readline()
        assert line.startswith("FakeHub serving at http://127.0.0.1:")
        url = line.split()[3]
        api = HfApi(endpoint=url, token=False)
        assert {s.rfilename for s in api.model_info("cli/model").siblings} == {"config.json", "sub/model.gguf"}
        path = hf_hub_download("cli/model", "sub/model.gguf", endpoint=url, cache_dir=tmp_path / "c", token=False)
        assert Path(path).read_bytes() == b"gguf bytes"
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=5) == 0
        process.stdout.close()


def test_request_record_type_is_shared(hub: FakeHub, api: HfApi) -> None:
    api.model_info(REPO)
    record = hub.requests[-1]
    assert isinstance(record, RequestRecord)
    assert record.repo_id == REPO and record.status == 200 and record.method == "GET"

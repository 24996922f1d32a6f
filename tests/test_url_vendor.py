"""One file from a plain URL, against the fault-injecting server and a deliberately
unhelpful one (no HEAD, no Content-Length)."""

from __future__ import annotations

import http.server
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from catalog.models import ModelEntry
from provisioner.models import DownloadJob
from provisioner.vendors.url import sanitise_filename
from tests.helpers import actions, blob, download, files_below, sha256
from tests.servers.faults import FaultServer

WEIGHTS = blob(2 * 1024 * 1024 + 3, seed=31)


class _PlainHandler(http.server.BaseHTTPRequestHandler):
    """HTTP/1.0, so a body may end with the connection instead of a Content-Length."""

    protocol_version = "HTTP/1.0"
    server: PlainServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_HEAD(self) -> None:
        self.server.seen.append(("HEAD", self.headers.get("Range")))
        if not self.server.head_allowed:
            self.send_response(405)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self._serve(body=False)

    def do_GET(self) -> None:
        self.server.seen.append(("GET", self.headers.get("Range")))
        self._serve(body=True)

    def _serve(self, *, body: bool) -> None:
        data = self.server.data
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range") or "")
        if match and self.server.tells_size:
            start = int(match[1])
            end = int(match[2]) if match[2] else len(data) - 1
            payload = data[start : end + 1]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        else:
            payload = data
            self.send_response(200)
        if self.server.tells_size:
            self.send_header("Content-Length", str(len(payload)))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        if body:
            self.wfile.write(payload)


class PlainServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, data: bytes, *, head_allowed: bool = True, tells_size: bool = True) -> None:
        super().__init__(("127.0.0.1", 0), _PlainHandler)
        self.data = data
        self.head_allowed = head_allowed
        self.tells_size = tells_size
        self.seen: list[tuple[str, str | None]] = []
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> PlainServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()


@pytest.fixture
def files() -> Iterator[FaultServer]:
    with FaultServer() as server:
        yield server


def only_entry_file(job: DownloadJob) -> Path:
    (name,) = files_below(job.entry.path)
    return Path(job.entry.path) / name


def test_it_names_the_file_after_the_url(files, hive):
    files.add_file("releases/tiny-Q4_K_M.gguf", WEIGHTS)

    job = download(files.url_for("releases/tiny-Q4_K_M.gguf"), hive)

    assert job.state == DownloadJob.SUCCEEDED, job.error
    entry = job.entry
    assert entry.vendor == "url"
    assert entry.revision == sha256(WEIGHTS)  # the FaultServer's ETag
    path = only_entry_file(job)
    assert path.name == "tiny-Q4_K_M.gguf"
    assert path.read_bytes() == WEIGHTS
    assert entry.files.get().sha256 == sha256(WEIGHTS)
    assert actions(job)[-1] == "model_download_complete"


def test_it_names_the_file_after_the_content_disposition(files, hive):
    files.add_file("download/8812", WEIGHTS)
    files.set_fault("download/8812", content_disposition='attachment; filename="llama-3.2-1b.Q8_0.gguf"')

    job = download(files.url_for("download/8812"), hive)

    assert job.state == DownloadJob.SUCCEEDED, job.error
    assert only_entry_file(job).name == "llama-3.2-1b.Q8_0.gguf"


@pytest.mark.parametrize(
    "disposition",
    [
        'attachment; filename="../../x.gguf"',
        "attachment; filename*=UTF-8''..%2F..%2Fx.gguf",
        'attachment; filename="..\\\\..\\\\x.gguf"',
        'attachment; filename="/etc/x.gguf"',
    ],
)
def test_it_never_lets_a_content_disposition_escape(files, hive, settings, tmp_path, disposition):
    files.add_file("download/evil", WEIGHTS)
    files.set_fault("download/evil", content_disposition=disposition)

    job = download(files.url_for("download/evil"), hive)

    assert job.state == DownloadJob.SUCCEEDED, job.error
    path = only_entry_file(job)
    assert path.name == "x.gguf"
    assert path.parent == Path(job.entry.path)
    escaped = [p for p in files_below(tmp_path) if p.endswith("x.gguf")]
    assert escaped == [str(path.relative_to(tmp_path))]


@pytest.mark.parametrize(
    ("offered", "kept"),
    [
        ("model.gguf", "model.gguf"),
        ("../../x.gguf", "x.gguf"),
        ("..", ""),
        (".hidden.gguf", "hidden.gguf"),
        ("a b;rm -rf $HOME.gguf", "a_b_rm_-rf_HOME.gguf"),
        ("ｍｏｄｅｌ／..／x.gguf", "x.gguf"),
        ("x" * 300 + ".gguf", "x" * 195 + ".gguf"),
    ],
)
def test_it_sanitises_offered_names(offered, kept):
    assert sanitise_filename(offered) == kept


def test_it_checks_a_sha256_given_in_the_fragment(files, hive):
    files.add_file("m.gguf", WEIGHTS)

    job = download(f"{files.url_for('m.gguf')}#sha256={sha256(WEIGHTS)}", hive)

    assert job.state == DownloadJob.SUCCEEDED, job.error
    assert job.entry.reference.endswith(f"#sha256={sha256(WEIGHTS)}")
    assert job.entry.files.get().sha256 == sha256(WEIGHTS)


def test_it_fails_verification_when_the_fragment_sha256_differs(files, hive, settings):
    files.add_file("m.gguf", WEIGHTS)

    job = download(f"{files.url_for('m.gguf')}#sha256={'0' * 64}", hive)

    assert job.state == DownloadJob.FAILED
    assert job.error_kind == "verification"
    assert "0" * 64 in job.error
    assert len(files.gets("m.gguf")) == 2  # once more from scratch before giving up
    assert not ModelEntry.objects.exists()
    assert not job.partial_dir.exists()


def test_it_resumes_after_a_dropped_connection(files, hive):
    files.add_file("m.gguf", WEIGHTS)
    files.set_fault("m.gguf", drop_after=1_000_000)

    job = download(f"{files.url_for('m.gguf')}#sha256={sha256(WEIGHTS)}", hive)

    assert job.state == DownloadJob.SUCCEEDED, job.error
    assert [r.range for r in files.gets("m.gguf")] == [None, "bytes=1000000-"]
    assert only_entry_file(job).read_bytes() == WEIGHTS


def test_it_asks_for_one_byte_when_head_is_refused(hive):
    with PlainServer(WEIGHTS, head_allowed=False) as server:
        job = download(f"{server.url}/files/m.gguf", hive)

    assert job.state == DownloadJob.SUCCEEDED, job.error
    assert server.seen[:2] == [("HEAD", None), ("GET", "bytes=0-0")]
    assert job.bytes_total == len(WEIGHTS)
    assert only_entry_file(job).read_bytes() == WEIGHTS


def test_it_refuses_a_server_that_does_not_tell_the_size(hive):
    with PlainServer(WEIGHTS, tells_size=False) as server:
        job = download(f"{server.url}/files/m.gguf", hive)

    assert job.state == DownloadJob.FAILED
    assert job.error_kind == "size_unknown"
    assert "does not tell the size" in job.error
    assert ("GET", None) not in server.seen  # never started the download itself


def test_it_says_when_the_file_is_not_there(files, hive):
    job = download(files.url_for("nope.gguf"), hive)
    assert job.state == DownloadJob.FAILED
    assert job.error_kind == "not_found"
    assert "404" in job.error


def test_it_refuses_plain_http_to_a_host_that_only_looks_like_loopback(alice_client, hive):
    response = alice_client.post("/jobs/", {"model": "http://127.0.0.1.example.com/m.gguf"})

    assert response.status_code == 400
    assert "only allowed for loopback" in response.content.decode()
    assert not DownloadJob.objects.exists()

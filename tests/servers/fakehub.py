"""A fake Hugging Face Hub for tests and manual runs, with no network access.

It speaks the parts of the Hub HTTP API that ``huggingface_hub`` 2.4.0 uses to
inspect and download model repos, with the same headers and error codes, so the
real client library runs unmodified against it:

* ``GET /api/models/{repo}[/revision/{rev}]`` - model info (``?blobs=true`` adds
  sizes, blob ids and LFS metadata to ``siblings``; ``expand`` filters keys)
* ``GET /api/models/{repo}/tree/{rev}[/{path}]`` - tree listing with
  ``recursive``/``expand`` and ``Link``-header pagination (1000, or 50 expanded)
* ``GET /api/models/{repo}/refs`` - branches and tags
* ``GET /api/whoami-v2`` - token check (only the hub's token is valid)
* ``HEAD|GET /{repo}/resolve/{rev}/{path}`` - small files are served by the hub
  itself; LFS files get a 302 to an attached :class:`FaultServer` (the "CDN")
  carrying ``X-Repo-Commit``, ``X-Linked-Size`` and ``X-Linked-Etag``, exactly
  like the real Hub. That redirect is what lets fault injection reach Hub
  downloads.

* ``GET /api/models?search=&filter=&sort=&limit=`` - the model search behind
  ``HfApi.list_models`` (substring of the repo id, tag filters, sort by downloads,
  likes, lastModified or createdAt, newest-first, ``Link``-header pages)

``FakeHub(mirror=True)`` plays a mirror that differs from the Hub the way
self-hosted mirrors do: listings (model info and tree) carry no sizes, blob ids or
LFS blocks; LFS files answer a *relative* redirect without ``X-Linked-*``
headers, to bytes the mirror serves itself; every file ignores Range; and there
is no model search (404).

Errors use the Hub's ``X-Error-Code``/``X-Error-Message`` headers so the client
raises ``RepositoryNotFoundError`` (401 when unauthenticated, like the Hub),
``RevisionNotFoundError``, ``EntryNotFoundError`` (``RemoteEntryNotFoundError``)
and ``GatedRepoError``. Like the real Hub, a gated repo's metadata and listing
are public; only file contents need the token.

Manual use::

    python -m tests.servers.fakehub --port 8900 --repo org/name=/path/to/dir
    HF_ENDPOINT=http://127.0.0.1:8900 hf download org/name
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode

from .faults import Fault, FaultServer, FileEntry, FileHandlerBase, RequestRecord, ServerBase, StatusSpec

__all__ = ["FAKE_USER", "Commit", "FakeHub", "HubFile", "Repo", "main"]

#: Files with these suffixes are LFS whatever their size (as .gitattributes does on the Hub).
LFS_SUFFIXES = (".gguf", ".safetensors", ".bin")
DEFAULT_LFS_THRESHOLD = 1024 * 1024
#: ``HfApi.whoami()`` user name for the hub's token.
FAKE_USER = "fakehub-user"
TREE_PAGE_SIZE = 1000
TREE_PAGE_SIZE_EXPANDED = 50
#: Commit dates are derived from this so every run produces the same JSON.
_EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
_COMMIT_SHA_RE = re.compile(r"[0-9a-f]{40}")
_TRUE = {"1", "true", "True"}


@dataclass(frozen=True)
class HubFile:
    """One file in one commit, with every value the Hub reports about it."""

    path: str
    #: Size the Hub reports (the claimed size when one was given).
    size: int
    sha256: str
    #: Git object id: of the content for regular files, of the pointer file for LFS files.
    blob_id: str
    lfs: bool
    pointer_size: int | None
    #: Where the bytes are; None when only a size is claimed.
    disk_path: Path | None
    disk_size: int | None
    #: Name of the LFS object on the file host (None for regular or claimed-only files).
    blob_name: str | None


@dataclass(frozen=True)
class Commit:
    sha: str
    parent: str | None
    title: str
    date: datetime
    files: Mapping[str, HubFile]


@dataclass
class Repo:
    repo_id: str
    gated: bool | str
    private: bool
    default_branch: str
    lfs_threshold: int
    info: dict[str, Any]
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _hash_path(path: Path) -> tuple[int, str, str]:
    """Size, sha256 and git blob id of a file, in one streaming pass."""
    size = path.stat().st_size
    sha256 = hashlib.sha256()
    git = hashlib.sha1(b"blob %d\0" % size)
    with open(path, "rb") as f:
        while chunk := f.read(1024 * 1024):
            sha256.update(chunk)
            git.update(chunk)
    return size, sha256.hexdigest(), git.hexdigest()


def _header_safe(value: str) -> str:
    """Header values must be latin-1 and single-line; repo file names may be neither."""
    return value.encode("ascii", "backslashreplace").decode("ascii").replace("\r", "\\r").replace("\n", "\\n")


def _content_disposition(path: str) -> str:
    """What the Hub's CDN sends, so clients can show a sensible file name."""
    basename = path.rsplit("/", 1)[-1]
    ascii_name = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in basename)
    return f"inline; filename*=UTF-8''{quote(basename, safe='')}; filename=\"{ascii_name}\";"


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] if "/" in path else ""


class _HubHandler(FileHandlerBase):
    server: FakeHub

    def start_response(self, status: int, headers: dict[str, str]) -> None:
        headers = {"X-Request-Id": f"fakehub-{uuid.uuid4()}", **headers}
        super().start_response(status, headers)

    # -- helpers -------------------------------------------------------------

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload).encode()
        self.send_simple(status, body, headers=headers, content_type="application/json; charset=utf-8")

    def _send_hub_error(
        self, status: int, code: str | None, message: str, headers: dict[str, str] | None = None
    ) -> None:
        all_headers = {"X-Error-Message": _header_safe(message)}
        if code is not None:
            all_headers["X-Error-Code"] = code
        all_headers.update(headers or {})
        self._send_json(status, {"error": message}, all_headers)

    def _authorized(self) -> bool:
        token = self.server.token
        return token is not None and self.headers.get("Authorization") == f"Bearer {token}"

    def _split_repo(self, segments: list[str]) -> tuple[str, list[str]]:
        """Split ``[org, name, *rest]`` or ``[name, *rest]`` into repo id and rest."""
        names = [unquote(s) for s in segments]
        if len(names) >= 2 and self.server._has_repo(f"{names[0]}/{names[1]}"):
            return f"{names[0]}/{names[1]}", segments[2:]
        if names and self.server._has_repo(names[0]):
            return names[0], segments[1:]
        if len(names) >= 2 and names[1] not in ("revision", "tree", "refs", "resolve"):
            return f"{names[0]}/{names[1]}", segments[2:]
        return (names[0] if names else ""), segments[1:]

    def _lookup(self, repo_id: str, revision: str | None, *, download: bool) -> tuple[Repo, Commit] | None:
        """Find repo and commit the way the Hub checks access; send the error and return None otherwise."""
        hub = self.server
        repo = hub._get_repo(repo_id)
        authorized = self._authorized()
        if repo is None or (repo.private and not authorized):
            if authorized:
                self._send_hub_error(404, "RepoNotFound", "Repository not found")
            else:  # the Hub does not reveal whether a repo exists to anonymous callers
                self._send_hub_error(401, "RepoNotFound", "Invalid username or password.")
            return None
        if download and repo.gated and not authorized:
            if self.headers.get("Authorization") is None:
                message = (
                    f"Access to model {repo_id} is restricted. You must have access to it and be authenticated "
                    "to access it. Please log in."
                )
                self._send_hub_error(401, "GatedRepo", message)
            else:
                message = (
                    f"Access to model {repo_id} is restricted and you are not in the authorized list. "
                    f"Visit {hub.url}/{repo_id} to ask for access."
                )
                self._send_hub_error(403, "GatedRepo", message)
            return None
        commit = hub._resolve(repo, revision)
        if commit is None:
            self._send_hub_error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return None
        return repo, commit

    # -- routing -------------------------------------------------------------

    def route(self, method: str, raw_path: str, query: str) -> None:
        segments = raw_path.split("/")[1:]
        params = parse_qs(query, keep_blank_values=True)
        if segments == ["api", "whoami-v2"]:
            self._whoami()
            return
        if segments == ["api", "models"] and method == "GET":
            self._search(raw_path, params)
            return
        if self.server.mirror and len(segments) == 2 and segments[0] == "mirror-lfs":
            self._mirror_lfs(method, segments[1])
            return
        if len(segments) >= 3 and segments[0] == "api" and segments[1] == "models":
            error = self.server._take_api_error() if method == "GET" else None
            if error is not None:
                code, headers = error
                self._send_hub_error(code, None, self.responses.get(code, ("Error",))[0], headers)
                return
            self._api_models(method, raw_path, segments[2:], params)
            return
        for index in (2, 1):
            if len(segments) > index + 2 and segments[index] == "resolve":
                repo_id = "/".join(unquote(s) for s in segments[:index])
                revision = unquote(segments[index + 1])
                path = unquote("/".join(segments[index + 2 :]))
                self._resolve_file(method, repo_id, revision, path)
                return
        self.send_simple(404, b"Not Found\n")

    def _api_models(self, method: str, raw_path: str, segments: list[str], params: dict[str, list[str]]) -> None:
        repo_id, rest = self._split_repo(segments)
        self.record.repo_id = repo_id
        if not rest:
            self._model_info(repo_id, None, params)
        elif rest[0] == "revision" and len(rest) >= 2:
            self._model_info(repo_id, unquote("/".join(rest[1:])), params)
        elif rest[0] == "tree" and len(rest) >= 2:
            self._tree(raw_path, repo_id, unquote(rest[1]), unquote("/".join(rest[2:])), params)
        elif rest == ["refs"]:
            self._refs(repo_id)
        else:
            self.send_simple(404, b"Not Found\n")

    # -- endpoints -----------------------------------------------------------

    def _model_info(self, repo_id: str, revision: str | None, params: dict[str, list[str]]) -> None:
        found = self._lookup(repo_id, revision, download=False)
        if found is None:
            return
        repo, commit = found
        blobs = params.get("blobs", ["false"])[0] in _TRUE
        security = params.get("securityStatus", ["false"])[0] in _TRUE
        expand = params.get("expand", []) + params.get("expand[]", [])
        payload = self.server._model_info_json(repo, commit, blobs=blobs, security=security)
        if expand:
            payload = {key: value for key, value in payload.items() if key in ("_id", "id") or key in expand}
        self._send_json(200, payload)

    def _tree(self, raw_path: str, repo_id: str, revision: str, path: str, params: dict[str, list[str]]) -> None:
        found = self._lookup(repo_id, revision, download=False)
        if found is None:
            return
        repo, commit = found
        recursive = params.get("recursive", ["false"])[0] in _TRUE
        expand = params.get("expand", ["false"])[0] in _TRUE
        try:
            cursor = max(0, int(params.get("cursor", ["0"])[0]))
        except ValueError:
            cursor = 0
        entries = self.server._tree_entries(repo, commit, path.strip("/"), recursive=recursive, expand=expand)
        if entries is None:
            self._send_hub_error(
                404,
                "EntryNotFound",
                f'{path} does not exist on "{revision}"',
                {"X-Repo-Commit": commit.sha},
            )
            return
        page_size = TREE_PAGE_SIZE_EXPANDED if expand else TREE_PAGE_SIZE
        headers = {"X-Repo-Commit": commit.sha}
        if cursor + page_size < len(entries):
            next_query = urlencode(
                {"recursive": str(recursive).lower(), "expand": str(expand).lower(), "cursor": cursor + page_size}
            )
            host = self.headers.get("Host") or f"127.0.0.1:{self.server.port}"
            headers["Link"] = f'<http://{host}{raw_path}?{next_query}>; rel="next"'
        self._send_json(200, entries[cursor : cursor + page_size], headers)

    def _whoami(self) -> None:
        """Token check used by ``HfApi.whoami()``: only the hub's token is valid."""
        if not self._authorized():
            self._send_hub_error(401, None, "Invalid credentials in Authorization header")
            return
        self._send_json(
            200,
            {
                "type": "user",
                "id": "0" * 24,
                "name": FAKE_USER,
                "fullname": "Fake Hub User",
                "isPro": False,
                "canPay": False,
                "orgs": [],
                "auth": {"type": "access_token", "accessToken": {"displayName": "fakehub", "role": "read"}},
            },
        )

    def _refs(self, repo_id: str) -> None:
        found = self._lookup(repo_id, None, download=False)
        if found is None:
            return
        repo, _ = found
        with self.server._lock:
            branches = dict(repo.branches)
            tags = dict(repo.tags)
        self._send_json(
            200,
            {
                "branches": [{"name": n, "ref": f"refs/heads/{n}", "targetCommit": s} for n, s in branches.items()],
                "converts": [],
                "tags": [{"name": n, "ref": f"refs/tags/{n}", "targetCommit": s} for n, s in tags.items()],
                "pullRequests": [],
            },
        )

    def _resolve_file(self, method: str, repo_id: str, revision: str, path: str) -> None:
        self.record.repo_id = repo_id
        self.record.file = path
        found = self._lookup(repo_id, revision, download=True)
        if found is None:
            return
        _, commit = found
        hub_file = commit.files.get(path)
        if hub_file is None:
            self._send_hub_error(404, "EntryNotFound", "Entry not found", {"X-Repo-Commit": commit.sha})
            return
        headers = {"X-Repo-Commit": commit.sha}
        if hub_file.lfs and self.server.mirror:
            # A relative redirect to bytes the mirror keeps itself, with none of the Hub's X-Linked-* headers.
            location = f"/mirror-lfs/{hub_file.sha256}"
            headers["Location"] = location
            self.send_simple(302, f"Found. Redirecting to {location}".encode(), headers=headers)
            return
        if hub_file.lfs:
            # The Hub answers LFS files with a redirect to its CDN; metadata rides on the redirect.
            location = self.server._lfs_location(hub_file)
            headers.update(
                {
                    "Location": location,
                    "X-Linked-Size": str(hub_file.size),
                    "X-Linked-Etag": f'"{hub_file.sha256}"',
                    "ETag": f'"{hub_file.sha256}"',
                    "Accept-Ranges": "bytes",
                }
            )
            self.send_simple(302, f"Found. Redirecting to {location}".encode(), headers=headers)
            return
        assert hub_file.disk_path is not None and hub_file.disk_size is not None
        entry = FileEntry(path=hub_file.disk_path, size=hub_file.disk_size, etag=f'"{hub_file.blob_id}"')
        self.server._mirror_ignores_range((repo_id, path))
        self.serve_file(method, entry, (repo_id, path), extra_headers=headers)

    def _mirror_lfs(self, method: str, sha256: str) -> None:
        hub_file = self.server._lfs_file_by_sha256(sha256)
        if hub_file is None or hub_file.disk_path is None or hub_file.disk_size is None:
            self.send_simple(404, b"Not Found\n")
            return
        self.record.file = hub_file.path
        entry = FileEntry(path=hub_file.disk_path, size=hub_file.disk_size, etag=f'"{sha256}"')
        key = ("mirror-lfs", sha256)
        self.server._mirror_ignores_range(key)
        self.serve_file(method, entry, key)

    def _search(self, raw_path: str, params: dict[str, list[str]]) -> None:
        """``HfApi.list_models``: what the Hub's search answers, one page at a time."""
        if self.server.mirror:
            self.send_simple(404, b"Not Found\n")
            return
        search = params.get("search", [""])[0].lower()
        wanted_tags = set(params.get("filter", []))
        sort = params.get("sort", [""])[0]
        try:
            limit = max(1, int(params.get("limit", ["30"])[0]))
            cursor = max(0, int(params.get("cursor", ["0"])[0]))
        except ValueError:
            limit, cursor = 30, 0
        found = []
        for repo in self.server._all_repos():
            if repo.private or search not in repo.repo_id.lower():
                continue
            head = repo.commits[repo.branches[repo.default_branch]]
            info = self.server._model_info_json(repo, head, blobs=False, security=False)
            if not wanted_tags <= set(info.get("tags", [])):
                continue
            info.pop("siblings", None)
            info.pop("spaces", None)
            found.append(info)
        if sort in ("downloads", "likes", "lastModified", "createdAt"):
            found.sort(key=lambda info: info.get(sort) or 0, reverse=True)
        headers = {}
        if cursor + limit < len(found):
            query = urlencode(
                [(k, v) for k, values in params.items() if k != "cursor" for v in values] + [("cursor", cursor + limit)]
            )
            host = self.headers.get("Host") or f"127.0.0.1:{self.server.port}"
            headers["Link"] = f'<http://{host}{raw_path}?{query}>; rel="next"'
        self._send_json(200, found[cursor : cursor + limit], headers)


class FakeHub(ServerBase):
    """Fake Hub server. See the module docstring for the routes.

    ``hub = FakeHub(token="hf_secret_test_token")``; with a token, gated repos
    serve files only to ``Authorization: Bearer <token>`` (no header: 401,
    another token: 403, both ``GatedRepo``) and private repos look missing to
    everyone else. LFS files live on :attr:`file_host`, a :class:`FaultServer`
    created and owned by the hub unless one is passed in.
    """

    handler_class = _HubHandler

    def __init__(
        self,
        token: str | None = None,
        *,
        file_host: FaultServer | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        verbose: bool = False,
        mirror: bool = False,
    ) -> None:
        self.token = token
        self.mirror = mirror
        self._owns_file_host = file_host is None
        self.file_host: FaultServer = file_host if file_host is not None else FaultServer(host, verbose=verbose)
        self._repos: dict[str, Repo] = {}
        self._api_errors: list[StatusSpec] = []
        self._tmpdir = tempfile.TemporaryDirectory(prefix="fakehub-", ignore_cleanup_errors=True)
        super().__init__(host, port, verbose=verbose)

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> FakeHub:
        """Start the hub and its file host (if not already running)."""
        if not self.file_host.running:
            self.file_host.start()
        super().start()
        return self

    def stop(self) -> None:
        """Stop the hub, and the file host if the hub created it."""
        super().stop()
        if self._owns_file_host:
            self.file_host.stop()
        self._tmpdir.cleanup()

    def __enter__(self) -> FakeHub:
        return self.start()

    # -- repo content -----------------------------------------------------------

    def add_repo(
        self,
        repo_id: str,
        files: Mapping[str, bytes | Path],
        *,
        gated: bool | str = False,
        private: bool = False,
        branch: str = "main",
        tags: Iterable[str] = (),
        lfs_threshold: int = DEFAULT_LFS_THRESHOLD,
        claimed_sizes: Mapping[str, int] | None = None,
        info: Mapping[str, Any] | None = None,
    ) -> str:
        """Create a model repo with one commit on ``branch``; return its 40-hex sha.

        Files of at least ``lfs_threshold`` bytes, or named ``*.gguf``,
        ``*.safetensors`` or ``*.bin``, are LFS (served via the file host).
        ``claimed_sizes`` makes listings and HEAD report a size the hub does not
        have bytes for (paths may be absent from ``files``; such files are LFS and
        their download 404s on the file host) - for disk-space pre-checks.
        ``gated`` may be True (reported as ``"manual"``), ``"auto"`` or ``"manual"``.
        ``info`` entries are merged into the model info JSON (e.g. ``pipeline_tag``).
        File names are kept verbatim, even nasty ones like ``../evil.bin``.
        """
        with self._lock:
            if repo_id in self._repos:
                raise ValueError(f"repo {repo_id!r} already exists; use add_commit()")
            self._repos[repo_id] = Repo(
                repo_id=repo_id,
                gated="manual" if gated is True else gated,
                private=private,
                default_branch=branch,
                lfs_threshold=lfs_threshold,
                info=dict(info or {}),
            )
        return self.add_commit(
            repo_id, files, branch=branch, tags=tags, claimed_sizes=claimed_sizes, title="initial commit"
        )

    def add_commit(
        self,
        repo_id: str,
        files: Mapping[str, bytes | Path],
        *,
        branch: str | None = None,
        tags: Iterable[str] = (),
        delete: Iterable[str] = (),
        claimed_sizes: Mapping[str, int] | None = None,
        title: str | None = None,
    ) -> str:
        """Add a commit on ``branch`` (default: the repo's default branch); return its sha.

        ``files`` are added or replaced on top of the branch head, ``delete``
        removes paths. A new branch starts from the default branch head. Older
        commits stay resolvable by sha; ``tags`` point at the new commit.
        """
        repo = self._require_repo(repo_id)
        branch = branch or repo.default_branch
        claimed = dict(claimed_sizes or {})
        new_files = {path: self._make_file(repo, path, data, claimed.get(path)) for path, data in files.items()}
        for path, size in claimed.items():
            if path not in files:
                new_files[path] = self._make_file(repo, path, None, size)
        with self._lock:
            parent = repo.branches.get(branch) or repo.branches.get(repo.default_branch)
            merged = dict(repo.commits[parent].files) if parent else {}
            for path in delete:
                merged.pop(path, None)
            merged.update(new_files)
            title = title or f"Update {len(new_files)} file(s)"
            identity = json.dumps(
                [repo_id, branch, parent, title, sorted((f.path, f.blob_id, f.sha256, f.size) for f in merged.values())]
            )
            sha = hashlib.sha1(identity.encode()).hexdigest()
            repo.commits[sha] = Commit(
                sha=sha,
                parent=parent,
                title=title,
                date=_EPOCH + timedelta(hours=len(repo.commits)),
                files=merged,
            )
            repo.branches[branch] = sha
            for tag in tags:
                repo.tags[tag] = sha
        return sha

    def add_tag(self, repo_id: str, tag: str, revision: str | None = None) -> str:
        """Point ``tag`` at ``revision`` (default branch head); return the commit sha."""
        sha = self.commit_sha(repo_id, revision)
        with self._lock:
            self._require_repo(repo_id).tags[tag] = sha
        return sha

    def commit_sha(self, repo_id: str, revision: str | None = None) -> str:
        """Commit sha a branch, tag or sha resolves to (default branch when None)."""
        commit = self._resolve(self._require_repo(repo_id), revision)
        if commit is None:
            raise KeyError(f"{repo_id}: unknown revision {revision!r}")
        return commit.sha

    def files(self, repo_id: str, revision: str | None = None) -> dict[str, HubFile]:
        """The files of a revision, keyed by path."""
        commit = self._resolve(self._require_repo(repo_id), revision)
        if commit is None:
            raise KeyError(f"{repo_id}: unknown revision {revision!r}")
        return dict(commit.files)

    def resolve_url(self, repo_id: str, path: str, revision: str = "main") -> str:
        """The ``/resolve/`` URL huggingface_hub would build (``hf_hub_url``)."""
        return f"{self.url}/{repo_id}/resolve/{quote(revision, safe='')}/{quote(path)}"

    def lfs_url(self, repo_id: str, path: str, revision: str | None = None) -> str:
        """The file host URL an LFS file redirects to."""
        return self._lfs_location(self._file(repo_id, path, revision))

    # -- faults and request log ----------------------------------------------------

    def set_fault(
        self, repo_id: str, path: str, fault: Fault | None = None, *, revision: str | None = None, **fields: Any
    ) -> None:
        """Set a :class:`Fault` on a file's bytes (at ``revision``, default branch head by default).

        For LFS files this is forwarded to the file host (the CDN); regular
        files are faulted on the hub's own resolve responses.
        """
        hub_file = self._file(repo_id, path, revision)
        if hub_file.lfs:
            if hub_file.blob_name is None:
                raise ValueError(f"{repo_id}/{path} only has a claimed size; there are no bytes to fault")
            self.file_host.set_fault(hub_file.blob_name, fault, **fields)
        else:
            self._store_fault((repo_id, path), fault, fields)

    def clear_faults(self, repo_id: str | None = None, path: str | None = None, *, revision: str | None = None) -> None:
        """Clear the faults of one file, or of everything (hub and file host) when called bare."""
        if repo_id is None or path is None:
            self._drop_faults(None)
            self.file_host.clear_faults()
            with self._lock:
                self._api_errors.clear()
            return
        hub_file = self._file(repo_id, path, revision)
        if hub_file.blob_name is not None:
            self.file_host.clear_faults(hub_file.blob_name)
        self._drop_faults((repo_id, path))

    def set_api_statuses(self, statuses: Iterable[StatusSpec]) -> None:
        """Queue error responses for the next ``/api/models/...`` GETs (one per request), e.g. ``[503]``."""
        with self._lock:
            self._api_errors = list(statuses)

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until no request is in flight on the hub or the file host."""
        deadline = time.monotonic() + timeout
        return super().wait_idle(timeout) and self.file_host.wait_idle(max(0.0, deadline - time.monotonic()))

    def gets(self, repo_id: str, path: str) -> list[RequestRecord]:
        """Every GET for a file's bytes, on the hub (resolve) and on the file host, oldest first."""
        with self._lock:
            repo = self._repos.get(repo_id)
            commits = list(repo.commits.values()) if repo else []
        blob_names = {c.files[path].blob_name for c in commits if path in c.files} - {None}
        hub_gets = [r for r in self.requests if r.method == "GET" and r.repo_id == repo_id and r.file == path]
        host_gets = [r for r in self.file_host.requests if r.method == "GET" and r.name in blob_names]
        return sorted(hub_gets + host_gets, key=lambda r: r.started)

    # -- internals -----------------------------------------------------------------

    def _all_repos(self) -> list[Repo]:
        with self._lock:
            return list(self._repos.values())

    def _lfs_file_by_sha256(self, sha256: str) -> HubFile | None:
        for repo in self._all_repos():
            with self._lock:
                commits = list(repo.commits.values())
            for commit in commits:
                for hub_file in commit.files.values():
                    if hub_file.lfs and hub_file.sha256 == sha256 and hub_file.disk_path is not None:
                        return hub_file
        return None

    def _mirror_ignores_range(self, key: tuple[str, str]) -> None:
        """A mirror serves every file whole, Range or not (unless a test set its own fault)."""
        if self.mirror and self._current_fault(key) is None:
            self._store_fault(key, Fault(ignore_range=True), {})

    def _has_repo(self, repo_id: str) -> bool:
        with self._lock:
            return repo_id in self._repos

    def _get_repo(self, repo_id: str) -> Repo | None:
        with self._lock:
            return self._repos.get(repo_id)

    def _require_repo(self, repo_id: str) -> Repo:
        repo = self._get_repo(repo_id)
        if repo is None:
            raise KeyError(f"no repo {repo_id!r}")
        return repo

    def _resolve(self, repo: Repo, revision: str | None) -> Commit | None:
        """Branch, then tag, then full commit sha - the order the Hub uses."""
        revision = repo.default_branch if revision is None else revision
        with self._lock:
            sha = repo.branches.get(revision) or repo.tags.get(revision)
            if sha is None and _COMMIT_SHA_RE.fullmatch(revision):
                sha = revision
            return repo.commits.get(sha) if sha else None

    def _file(self, repo_id: str, path: str, revision: str | None) -> HubFile:
        repo = self._require_repo(repo_id)
        commit = self._resolve(repo, revision)
        if commit is not None and path in commit.files:
            return commit.files[path]
        if revision is None:  # fall back to the newest commit on any branch that has the file
            with self._lock:
                commits = list(repo.commits.values())
            for candidate in reversed(commits):
                if path in candidate.files:
                    return candidate.files[path]
        raise KeyError(f"{repo_id}: no file {path!r} at {revision or repo.default_branch!r}")

    def _take_api_error(self) -> tuple[int, dict[str, str]] | None:
        with self._lock:
            if not self._api_errors:
                return None
            spec = self._api_errors.pop(0)
        return (spec[0], dict(spec[1])) if isinstance(spec, tuple) else (int(spec), {})

    def _lfs_location(self, hub_file: HubFile) -> str:
        if hub_file.blob_name is None:  # claimed-only: point at a name the file host does not have
            return f"{self.file_host.url}/lfs/missing/{hub_file.sha256}"
        return self.file_host.url_for(hub_file.blob_name)

    def _store_bytes(self, data: bytes) -> tuple[Path, int, str, str]:
        sha256 = hashlib.sha256(data).hexdigest()
        path = Path(self._tmpdir.name) / sha256
        if not path.exists():
            path.write_bytes(data)
        return path, len(data), sha256, _git_oid(data)

    def _make_file(self, repo: Repo, path: str, data: bytes | Path | None, claimed: int | None) -> HubFile:
        disk_path: Path | None
        if data is None:
            assert claimed is not None
            disk_path, disk_size, content_oid = None, None, None
            sha256 = hashlib.sha256(f"claimed:{repo.repo_id}:{path}:{claimed}".encode()).hexdigest()
        elif isinstance(data, (bytes, bytearray, memoryview)):
            disk_path, disk_size, sha256, content_oid = self._store_bytes(bytes(data))
        elif isinstance(data, Path):
            disk_path = data.resolve()
            disk_size, sha256, content_oid = _hash_path(disk_path)
        else:
            raise TypeError(f"{path}: file content must be bytes or pathlib.Path, not {type(data).__name__}")
        size = claimed if claimed is not None else disk_size
        assert size is not None
        lfs = data is None or size >= repo.lfs_threshold or path.endswith(LFS_SUFFIXES)
        if not lfs:
            assert content_oid is not None
            return HubFile(path, size, sha256, content_oid, False, None, disk_path, disk_size, None)
        pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()
        blob_name = None
        if disk_path is not None:
            # One object per (path, content): faults and request logs never leak between files.
            path_key = hashlib.sha1(path.encode()).hexdigest()[:12]
            blob_name = f"lfs/{repo.repo_id}/{path_key}/{sha256}"
            self.file_host.add_file(
                blob_name, disk_path, etag=sha256, headers={"Content-Disposition": _content_disposition(path)}
            )
        return HubFile(path, size, sha256, _git_oid(pointer), True, len(pointer), disk_path, disk_size, blob_name)

    def _model_info_json(self, repo: Repo, commit: Commit, *, blobs: bool, security: bool) -> dict[str, Any]:
        files = [commit.files[p] for p in sorted(commit.files)]
        siblings: list[dict[str, Any]] = []
        for f in files:
            sibling: dict[str, Any] = {"rfilename": f.path}
            if blobs and not self.mirror:
                sibling.update({"blobId": f.blob_id, "size": f.size})
                if f.lfs:
                    sibling["lfs"] = {"sha256": f.sha256, "size": f.size, "pointerSize": f.pointer_size}
            siblings.append(sibling)
        names = [f.path for f in files]
        tags: list[str] = []
        library_name = None
        if "config.json" in names:
            library_name = "transformers"
            tags.append("transformers")
        if any(n.endswith(".safetensors") for n in names):
            tags.append("safetensors")
        if any(n.endswith(".gguf") for n in names):
            tags.append("gguf")
        tags.append("region:us")
        with self._lock:
            first_commit = min(repo.commits.values(), key=lambda c: c.date)
        payload: dict[str, Any] = {
            "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "author": repo.repo_id.split("/")[0] if "/" in repo.repo_id else None,
            "sha": commit.sha,
            "lastModified": _iso(commit.date),
            "createdAt": _iso(first_commit.date),
            "private": repo.private,
            "gated": repo.gated,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": tags,
            "library_name": library_name,
            "siblings": siblings,
            "spaces": [],
            "usedStorage": sum(f.size for f in files),
        }
        if security:
            payload["securityRepoStatus"] = {"scansDone": True, "filesWithIssues": []}
        payload.update(repo.info)
        return {key: value for key, value in payload.items() if value is not None}

    def _tree_entries(
        self, repo: Repo, commit: Commit, path: str, *, recursive: bool, expand: bool
    ) -> list[dict[str, Any]] | None:
        """Tree listing under ``path`` (directories first), or None if it is not a directory."""
        files = commit.files
        prefix = f"{path}/" if path else ""
        dirs: set[str] = set()
        for file_path in files:
            parts = file_path.split("/")
            for i in range(1, len(parts)):
                if parts[i - 1]:  # no directory entry for an empty component ("/abs.bin")
                    dirs.add("/".join(parts[:i]))
        if path and path not in dirs:
            return None
        if recursive:
            chosen_dirs = sorted(d for d in dirs if d.startswith(prefix) and d != path)
            chosen_files = sorted(p for p in files if p.startswith(prefix))
        else:
            chosen_dirs = sorted(d for d in dirs if _parent(d) == path)
            chosen_files = sorted(p for p in files if _parent(p) == path)

        entries: list[dict[str, Any]] = []
        for d in chosen_dirs:
            entry: dict[str, Any] = {"type": "directory", "oid": self._tree_oid(commit, d), "size": 0, "path": d}
            if expand:
                entry["lastCommit"] = self._last_commit(repo, commit, lambda c, d=d: self._tree_oid(c, d))
            entries.append(entry)
        for p in chosen_files:
            f = files[p]
            if self.mirror:  # a mirror's listing: names only
                entries.append({"type": "file", "path": f.path})
                continue
            entry = {"type": "file", "oid": f.blob_id, "size": f.size, "path": f.path}
            if f.lfs:
                entry["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": f.pointer_size}
            if expand:
                entry["lastCommit"] = self._last_commit(repo, commit, lambda c, p=p: c.files.get(p))
                entry["securityFileStatus"] = {
                    "status": "safe",
                    "avScan": {"virusFound": False, "virusNames": None},
                    "pickleImportScan": None,
                }
            entries.append(entry)
        return entries

    @staticmethod
    def _tree_oid(commit: Commit, directory: str) -> str:
        prefix = f"{directory}/"
        listing = "\n".join(f"{p} {f.blob_id}" for p, f in sorted(commit.files.items()) if p.startswith(prefix))
        return hashlib.sha1(f"tree {directory}\0{listing}".encode()).hexdigest()

    def _last_commit(self, repo: Repo, commit: Commit, state: Callable[[Commit], object]) -> dict[str, str]:
        """The oldest ancestor in which ``state`` still has its current value."""
        current = state(commit)
        found = commit
        while found.parent is not None:
            parent = repo.commits[found.parent]
            if state(parent) != current:
                break
            found = parent
        return {"id": found.sha, "title": found.title, "date": _iso(found.date)}


def _directory_files(directory: Path) -> dict[str, bytes | Path]:
    """All files below ``directory`` (``.git`` excluded), keyed by POSIX path."""
    files: dict[str, bytes | Path] = {}
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory)
        if path.is_file() and ".git" not in relative.parts:
            files[relative.as_posix()] = path
    return files


def main(argv: list[str] | None = None) -> int:
    """Serve directories as model repos until Ctrl-C (manual testing, benchmarks)."""
    parser = argparse.ArgumentParser(prog="python -m tests.servers.fakehub", description=main.__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8900)
    parser.add_argument("--file-host-port", type=int, default=0, help="port of the LFS file host (default: any)")
    parser.add_argument(
        "--repo", action="append", default=[], metavar="ORG/NAME=DIR", help="serve DIR as repo ORG/NAME (repeatable)"
    )
    parser.add_argument("--throttle-bps", type=int, default=None, help="rate-limit every LFS body to N bytes/s")
    parser.add_argument("--token", default=None, help="token accepted for gated repos")
    parser.add_argument("--gated", action="append", default=[], metavar="ORG/NAME", help="mark a repo as gated")
    parser.add_argument("--lfs-threshold", type=int, default=DEFAULT_LFS_THRESHOLD)
    parser.add_argument("--mirror", action="store_true", help="behave like a mirror (no sizes in listings, no search)")
    parser.add_argument("--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    if not args.repo:
        parser.error("at least one --repo ORG/NAME=DIR is required")
    # Ctrl-C must work even when started in the background (which ignores SIGINT),
    # and a plain `kill` should shut down just as cleanly.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)

    file_host = FaultServer(args.host, args.file_host_port, verbose=args.verbose)
    hub = FakeHub(
        args.token, file_host=file_host, host=args.host, port=args.port, verbose=args.verbose, mirror=args.mirror
    )
    try:
        for spec in args.repo:
            repo_id, sep, directory = spec.partition("=")
            if not sep or not Path(directory).is_dir():
                parser.error(f"--repo {spec!r}: expected ORG/NAME=DIR with an existing directory")
            print(f"hashing {directory} ...", file=sys.stderr, flush=True)
            sha = hub.add_repo(
                repo_id,
                _directory_files(Path(directory)),
                gated=repo_id in args.gated,
                lfs_threshold=args.lfs_threshold,
            )
            lfs_files = [f for f in hub.files(repo_id).values() if f.lfs]
            if args.throttle_bps:
                for f in lfs_files:
                    hub.set_fault(repo_id, f.path, throttle_bps=args.throttle_bps)
            print(
                f"  {repo_id}@{sha[:10]}: {len(hub.files(repo_id))} files ({len(lfs_files)} LFS)",
                file=sys.stderr,
                flush=True,
            )
        hub.start()
        print(f"FakeHub serving at {hub.url} (LFS file host {file_host.url})", flush=True)
        print(f"  export HF_ENDPOINT={hub.url}", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("stopping", file=sys.stderr)
    finally:
        hub.stop()
        file_host.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Hugging Face Hub: huggingface_hub for listing, metadata, auth and errors; our own
resumable transfer for the bytes, pinned to the resolved commit.

``HF_ENDPOINT`` (or the list in ``RBEE_HF_ENDPOINTS``, or a hive's own list) is
configured by the operator, so it is trusted with everything it redirects to (the Hub's CDN, or a mirror on the local network): the address
checks of the transfer are for what admins type, not for the endpoint they chose.
"""

from __future__ import annotations

import fnmatch
import hashlib
import posixpath
import re
from pathlib import Path
from typing import Any

from django.conf import settings
from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_url
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from provisioner import metadata
from provisioner.references import HuggingFaceRef, Reference
from provisioner.vendors import transfer
from provisioner.vendors.base import (
    AccessDenied,
    CancelToken,
    DownloadError,
    FetchResult,
    NetworkError,
    NotFound,
    Plan,
    PlannedFile,
    Progress,
    safe_relative_path,
)

_GLOB_CHARS = set("*?[")
_QUANT = re.compile(r"(?i)(?:^|[-._])((?:I?Q\d(?:_[A-Z0-9]+)*)|BF16|F16|F32)(?=[-._])")
_SPLIT = re.compile(r"-\d{5}-of-\d{5}\.gguf$", re.IGNORECASE)
# What a loader needs next to the weights chosen by a glob.
_COMPANION = ("*.json", "tokenizer.model", "*.tiktoken", "merges.txt", "vocab.txt", "*.jinja")
_SKIPPED = {".gitattributes"}


def gguf_quant(filename: str) -> str | None:
    """The quant tag in a GGUF file name (``Q4_K_M``), split suffixes ignored."""
    base = posixpath.basename(filename)
    if not base.lower().endswith(".gguf"):
        return None
    stem = _SPLIT.sub(".gguf", base)
    found = _QUANT.findall(stem)
    return found[-1].upper() if found else None


#: The quant a GGUF repo gets when the reference names none: 4-bit is what llama.cpp
#: and Ollama default to, then more bits before fewer, full precision last; within a
#: bit width, this order (a quant not listed comes after the listed ones).
QUANT_PREFERENCE = (
    "Q4_K_M", "Q4_K_S", "IQ4_XS", "IQ4_NL", "Q4_0", "Q4_1",
    "Q5_K_M", "Q5_K_S", "Q5_0", "Q5_1", "Q6_K", "Q8_0",
    "Q3_K_L", "Q3_K_M", "IQ3_M", "Q3_K_S", "IQ3_XS", "IQ3_XXS", "Q2_K", "IQ2_M", "IQ2_XS",
    "BF16", "F16", "F32",
)  # fmt: skip
_BITS = re.compile(r"^I?Q(\d)")
_QUANT_FOLDER = re.compile(r"(?i)^(?:I?Q\d(?:_[A-Z0-9]+)*|BF16|F16|F32)$")


def repo_quants(names: list[str]) -> list[str]:
    """Every GGUF quant in a repo, named in the file name or by the folder the files are in."""
    found = set()
    for name in names:
        if not name.lower().endswith(".gguf"):
            continue
        quant = gguf_quant(name)
        if quant is None:
            folders = [part for part in name.split("/")[:-1] if _QUANT_FOLDER.match(part)]
            quant = folders[-1].upper() if folders else None
        if quant:
            found.add(quant)
    return sorted(found)


def _quant_rank(quant: str) -> tuple[int, int, str]:
    match = _BITS.match(quant)
    if match:
        bits = int(match[1])
        width = bits - 4 if bits >= 4 else 10 - bits  # 4, 5, 6, 8 bits, then 3, 2, 1
    else:
        width = 20  # BF16, F16, F32
    order = QUANT_PREFERENCE.index(quant) if quant in QUANT_PREFERENCE else len(QUANT_PREFERENCE)
    return width, order, quant


def default_quant(quants: list[str]) -> str | None:
    """The quant to take when none was asked for (see QUANT_PREFERENCE)."""
    return min(quants, key=_quant_rank) if quants else None


def _is_file_selector(selector: str) -> bool:
    """A glob (``*.safetensors``) or a file name (``model.safetensors``, ``sub/x.gguf``), not a quant tag."""
    return bool(_GLOB_CHARS & set(selector)) or "." in selector or "/" in selector


def select_files(names: list[str], selector: str | None) -> list[str]:
    """Apply a selector: nothing (every file), a glob or file name plus companions, or a GGUF quant."""
    names = [n for n in names if posixpath.basename(n) not in _SKIPPED]
    if not selector:
        return names
    if _is_file_selector(selector):
        chosen = [n for n in names if fnmatch.fnmatchcase(n, selector) or fnmatch.fnmatchcase(posixpath.basename(n), selector)]
        if not chosen:
            return []
        companions = [
            n for n in names if "/" not in n and any(fnmatch.fnmatchcase(n, p) for p in _COMPANION) and n not in chosen
        ]
        return sorted(chosen + companions)
    tag = selector.upper()
    return [n for n in names if gguf_quant(n) == tag or (n.lower().endswith(".gguf") and tag in n.upper().split("/")[:-1])]


class _EndpointDown(Exception):
    """An endpoint that did not answer (refused, timed out) or failed (5xx): try the next."""


_ETAG_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_ETAG_GIT = re.compile(r"^[0-9a-f]{40}$")


class HuggingFaceVendor:
    name = "huggingface"
    label = "Hugging Face"

    def __init__(self, endpoint: str | None = None, token: str | None = None, endpoints: list[str] | None = None) -> None:
        """``endpoints``: tried in order (a hive's own list); else ``endpoint``; else
        RBEE_HF_ENDPOINTS; else HF_ENDPOINT."""
        chosen = endpoints or ([endpoint] if endpoint else None) or settings.RBEE_HF_ENDPOINTS or [settings.HF_ENDPOINT]
        self.endpoints = [e.rstrip("/") for e in chosen]
        self.endpoint = self.endpoints[0]
        self.token = token if token is not None else settings.HF_TOKEN

    def supports(self, ref: Reference) -> bool:
        return isinstance(ref, HuggingFaceRef)

    def validate(self, ref: Reference) -> None:
        """Nothing to refuse before asking the Hub: parsing checked the repo id already."""
        assert isinstance(ref, HuggingFaceRef)

    def _api(self, endpoint: str | None = None) -> HfApi:
        # token=False: never fall back to a token file on the server's disk.
        return HfApi(endpoint=endpoint or self.endpoint, token=self.token or False)

    def plan(self, ref: Reference) -> Plan:
        """Ask each endpoint in turn; the next one only when this one is down.

        A mirror that answers (even 404 or 401) has spoken: its answer stands, so a
        mirror missing a repo is not silently bypassed. What was tried is kept in the
        plan's ``notices`` for the job to narrate.
        """
        assert isinstance(ref, HuggingFaceRef)
        notices: list[str] = []
        for index, endpoint in enumerate(self.endpoints):
            try:
                plan = self._plan_at(endpoint, ref)
            except _EndpointDown as exc:
                if index + 1 == len(self.endpoints):
                    every = " (every configured endpoint is down)" if len(self.endpoints) > 1 else ""
                    raise NetworkError(f"{exc}{every}") from None
                notices.append(f"the mirror {endpoint} is down ({exc}); trying {self.endpoints[index + 1]}")
                continue
            plan.extra["endpoint"] = endpoint
            plan.extra["notices"] = notices
            return plan
        raise NetworkError("no Hugging Face endpoint is configured")

    def _plan_at(self, endpoint: str, ref: HuggingFaceRef) -> Plan:
        revision = ref.revision or "main"
        try:
            info = self._api(endpoint).model_info(ref.repo_id, revision=revision, files_metadata=True)
        except Exception as exc:
            self._raise_for(exc, endpoint, ref, revision)
            raise
        if info.gated and not self.token:
            # The Hub shows a gated repo's listing to anyone but its files only to
            # accounts that accepted the terms: say so before a byte is requested.
            raise AccessDenied(
                f"{ref.repo_id} is gated: accept its terms on the Hub, then set HF_TOKEN for the dashboard"
            )
        siblings = {s.rfilename: s for s in info.siblings or []}
        for name in siblings:
            safe_relative_path(name)
        names = sorted(siblings)
        quants = repo_quants(names)
        # A GGUF repo holds the same model a dozen times over: without a selector, take one quant, not all.
        quant = default_quant(quants) if not ref.selector else (ref.selector if ref.selector in quants else None)
        chosen = select_files(names, ref.selector or quant)
        if not chosen:
            raise NotFound(self._nothing_selected(ref, names), kind="selector_matched_nothing")
        commit = info.sha or revision
        files = []
        blob_ids: dict[str, str] = {}
        for name in chosen:
            sibling = siblings[name]
            lfs = sibling.lfs
            size, sha256, blob_id = (lfs.size if lfs else sibling.size), (lfs.sha256 if lfs else None), None
            if not lfs and sibling.blob_id:
                blob_id = sibling.blob_id
            url = hf_hub_url(ref.repo_id, name, revision=commit, endpoint=endpoint)
            if size is None:
                # A mirror whose listing lacks sizes: ask the file itself, as hf_hub_download does.
                size, sha256, blob_id, commit = self._file_metadata(url, name, endpoint, ref, revision, commit)
            if blob_id:
                blob_ids[name] = blob_id
            files.append(PlannedFile(path=name, size=int(size), sha256=sha256, url=url))
        if commit != info.sha:
            files = [PlannedFile(f.path, f.size, f.sha256, hf_hub_url(ref.repo_id, f.path, revision=commit, endpoint=endpoint)) for f in files]
        sizes = {n: (s.lfs.size if s.lfs else s.size) for n, s in siblings.items()}
        # The size of each quant, for the fit table (known when the listing gives sizes).
        quant_sizes = {}
        for q in quants:
            q_sizes = [sizes[n] for n in select_files(names, q)]
            if q_sizes and all(isinstance(x, int) for x in q_sizes):
                quant_sizes[q] = sum(int(x) for x in q_sizes if x is not None)
        # The Hub gives no sha256 for files kept in git (configs, tokenizers), but their
        # git blob id is a sha1 of the content: checked after the download.
        return Plan(
            vendor=self.name,
            reference=ref.canonical,
            revision=commit,
            files=files,
            extra={
                "repo_id": ref.repo_id,
                # The quant downloaded (chosen by default when the reference names none) and every quant there is.
                "quant": quant,
                "quants": quants,
                "gguf_quants": quants,
                "quant_sizes": quant_sizes,
                "git_blob_ids": blob_ids,
                "has_config": "config.json" in siblings,
            },
        )

    def _raise_for(self, exc: Exception, endpoint: str, ref: HuggingFaceRef, revision: str) -> None:
        """The Hub client's error as ours; _EndpointDown when another endpoint may do better."""
        if isinstance(exc, GatedRepoError):
            if self.token:
                raise AccessDenied(
                    f"{ref.repo_id} is gated and the configured HF_TOKEN has no access: "
                    "accept the model's terms on the Hub with that account"
                ) from None
            raise AccessDenied(
                f"{ref.repo_id} is gated: accept its terms on the Hub, then set HF_TOKEN for the dashboard"
            ) from None
        if isinstance(exc, RevisionNotFoundError):
            raise NotFound(f"revision '{revision}' not found in {ref.repo_id}", kind="revision_not_found") from None
        if isinstance(exc, RepositoryNotFoundError):
            hint = "" if self.token else " (if it is private, set HF_TOKEN)"
            where = "the Hub" if len(self.endpoints) == 1 else endpoint
            raise NotFound(f"repository {ref.repo_id} not found on {where}{hint}", kind="repo_not_found") from None
        if isinstance(exc, OfflineModeIsEnabled):
            raise NetworkError("the Hub client is in offline mode (HF_HUB_OFFLINE is set)") from None
        if isinstance(exc, HfHubHTTPError):
            status = exc.response.status_code if exc.response is not None else None
            if status in (401, 403):
                raise AccessDenied(f"the Hub refused access to {ref.repo_id} ({status})") from None
            if status is not None and status >= 500:
                raise _EndpointDown(f"{endpoint} answered {status}") from None
            raise NetworkError(f"the Hub answered {status} for {ref.repo_id}") from None
        # Connection errors from the HTTP client are OSErrors, or httpx's own.
        if isinstance(exc, OSError) or type(exc).__module__.startswith(("httpx", "httpcore")):
            raise _EndpointDown(f"could not reach the Hub at {endpoint}: {type(exc).__name__}") from None

    def _file_metadata(
        self, url: str, name: str, endpoint: str, ref: HuggingFaceRef, revision: str, commit: str
    ) -> tuple[int, str | None, str | None, str]:
        """Size, sha256 (an LFS file's etag), git blob id (a regular file's) and commit, from a HEAD."""
        try:
            meta = get_hf_file_metadata(url, token=self.token or False, endpoint=endpoint)
        except Exception as exc:
            self._raise_for(exc, endpoint, ref, revision)
            raise
        if meta.size is None:
            raise DownloadError(f"{endpoint} gave no size for {name}, neither in its listing nor for the file")
        etag = (meta.etag or "").lower()
        sha256 = etag if _ETAG_SHA256.match(etag) else None
        blob_id = etag if _ETAG_GIT.match(etag) else None
        return meta.size, sha256, blob_id, meta.commit_hash or commit

    def describe(self, plan: Plan) -> dict[str, Any]:
        """What the model is, from the headers of the planned files (and the repo's
        config.json), read by Range without downloading the weights."""
        endpoint = str(plan.extra.get("endpoint") or self.endpoint)
        repo_id = str(plan.extra.get("repo_id", ""))
        urls = {f.path: f.url for f in plan.files}
        if plan.extra.get("has_config") and "config.json" not in urls:
            urls["config.json"] = hf_hub_url(repo_id, "config.json", revision=plan.revision, endpoint=endpoint)
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return metadata.describe(sorted(urls), metadata.remote_reader(urls, headers=headers, trusted=True))

    def _nothing_selected(self, ref: HuggingFaceRef, names: list[str]) -> str:
        quants = repo_quants(names)
        if quants:
            return f"no file of {ref.repo_id} matches '{ref.selector}'; quants available: {', '.join(quants)}"
        return f"no file of {ref.repo_id} matches '{ref.selector}'"

    def fetch(self, plan: Plan, dest: Path, progress: Progress, cancelled: CancelToken) -> FetchResult:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        blob_ids: dict[str, str] = plan.extra.get("git_blob_ids", {})
        digests = transfer.fetch_files(
            plan.files,
            dest,
            progress,
            cancelled,
            headers=headers,
            trusted=True,
            verify={path: _matches_blob_id(expected) for path, expected in blob_ids.items() if expected},
        )
        return FetchResult(sha256=digests)


def _matches_blob_id(expected: str) -> transfer.Verify:
    def verify(path: Path) -> str | None:
        actual = git_blob_id(path)
        return None if actual == expected else f"git blob id is {actual}, the Hub's is {expected}"

    return verify


def git_blob_id(path: Path) -> str:
    """Git's object id of a file: sha1 of "blob <size>\\0" and the content."""
    hasher = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as f:
        while block := f.read(1024 * 1024):
            hasher.update(block)
    return hasher.hexdigest()

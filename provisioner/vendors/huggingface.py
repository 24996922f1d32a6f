"""Hugging Face Hub: huggingface_hub for listing, metadata, auth and errors; our own
resumable transfer for the bytes, pinned to the resolved commit.

``HF_ENDPOINT`` is configured by the operator, so it is trusted with everything it
redirects to (the Hub's CDN, or a mirror on the local network): the address
checks of the transfer are for what admins type, not for the endpoint they chose.
"""

from __future__ import annotations

import fnmatch
import hashlib
import posixpath
import re
from pathlib import Path

from django.conf import settings
from huggingface_hub import HfApi, hf_hub_url
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

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


class HuggingFaceVendor:
    name = "huggingface"
    label = "Hugging Face"

    def __init__(self, endpoint: str | None = None, token: str | None = None) -> None:
        self.endpoint = (endpoint or settings.HF_ENDPOINT).rstrip("/")
        self.token = token if token is not None else settings.HF_TOKEN

    def supports(self, ref: Reference) -> bool:
        return isinstance(ref, HuggingFaceRef)

    def validate(self, ref: Reference) -> None:
        """Nothing to refuse before asking the Hub: parsing checked the repo id already."""
        assert isinstance(ref, HuggingFaceRef)

    def _api(self) -> HfApi:
        # token=False: never fall back to a token file on the server's disk.
        return HfApi(endpoint=self.endpoint, token=self.token or False)

    def plan(self, ref: Reference) -> Plan:
        assert isinstance(ref, HuggingFaceRef)
        revision = ref.revision or "main"
        try:
            info = self._api().model_info(ref.repo_id, revision=revision, files_metadata=True)
        except GatedRepoError:
            if self.token:
                raise AccessDenied(
                    f"{ref.repo_id} is gated and the configured HF_TOKEN has no access: "
                    "accept the model's terms on the Hub with that account"
                ) from None
            raise AccessDenied(
                f"{ref.repo_id} is gated: accept its terms on the Hub, then set HF_TOKEN for the dashboard"
            ) from None
        except RevisionNotFoundError:
            raise NotFound(f"revision '{revision}' not found in {ref.repo_id}", kind="revision_not_found") from None
        except RepositoryNotFoundError:
            hint = "" if self.token else " (if it is private, set HF_TOKEN)"
            raise NotFound(f"repository {ref.repo_id} not found on the Hub{hint}", kind="repo_not_found") from None
        except OfflineModeIsEnabled:
            raise NetworkError("the Hub client is in offline mode (HF_HUB_OFFLINE is set)") from None
        except HfHubHTTPError as exc:
            status = exc.response.status_code if exc.response is not None else None
            if status in (401, 403):
                raise AccessDenied(f"the Hub refused access to {ref.repo_id} ({status})") from None
            raise NetworkError(f"the Hub answered {status} for {ref.repo_id}") from None
        except OSError as exc:  # connection errors from the HTTP client are OSErrors too
            raise NetworkError(f"could not reach the Hub at {self.endpoint}: {type(exc).__name__}") from None
        except Exception as exc:
            if type(exc).__module__.startswith(("httpx", "httpcore")):
                raise NetworkError(f"could not reach the Hub at {self.endpoint}: {type(exc).__name__}") from None
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
        quants = repo_quants(sorted(siblings))
        # A GGUF repo holds the same model a dozen times over: without a selector, take one quant, not all.
        quant = default_quant(quants) if not ref.selector else (ref.selector if ref.selector in quants else None)
        chosen = select_files(sorted(siblings), ref.selector or quant)
        if not chosen:
            raise NotFound(self._nothing_selected(ref, sorted(siblings)), kind="selector_matched_nothing")
        commit = info.sha or revision
        files = []
        for name in chosen:
            sibling = siblings[name]
            lfs = sibling.lfs
            size = lfs.size if lfs else sibling.size
            if size is None:
                raise DownloadError(f"the Hub gave no size for {name}")
            files.append(
                PlannedFile(
                    path=name,
                    size=int(size),
                    sha256=lfs.sha256 if lfs else None,
                    url=hf_hub_url(ref.repo_id, name, revision=commit, endpoint=self.endpoint),
                )
            )
        # The Hub gives no sha256 for files kept in git (configs, tokenizers), but their
        # git blob id is a sha1 of the content: checked after the download.
        blob_ids = {n: siblings[n].blob_id for n in chosen if not siblings[n].lfs and siblings[n].blob_id}
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
                "git_blob_ids": blob_ids,
            },
        )

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
        actual = _git_blob_id(path)
        return None if actual == expected else f"git blob id is {actual}, the Hub's is {expected}"

    return verify


def _git_blob_id(path: Path) -> str:
    """Git's object id of a file: sha1 of "blob <size>\\0" and the content."""
    hasher = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as f:
        while block := f.read(1024 * 1024):
            hasher.update(block)
    return hasher.hexdigest()

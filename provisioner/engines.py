"""The catalog as inference engines look for models: a Hugging Face cache and an Ollama store.

Both are views of the entries' own files, made of hard links (symbolic links when
the cache sits on another filesystem), so they cost no second copy of the bytes:

``RBEE_MODELS_DIR/hf-cache``, huggingface_hub's cache layout::

    models--ORG--NAME/blobs/<etag>                 (sha256 for LFS files, git blob sha1 for the rest)
    models--ORG--NAME/snapshots/<commit>/<path>    -> ../../blobs/<etag>
    models--ORG--NAME/refs/<branch or tag>         the commit

``RBEE_MODELS_DIR/ollama-store``, Ollama's ``OLLAMA_MODELS`` layout (``ollama/`` is
the vendor's own area of entries, so the store has a folder of its own)::

    manifests/<registry host>/<namespace>/<model>/<tag>
    blobs/sha256-<hex>

An engine view is a convenience: a failure to make one is logged, never fails the
install or the delete it follows.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path
from urllib.parse import urlsplit

from django.conf import settings

from catalog.models import ModelEntry
from provisioner.references import HuggingFaceRef, OllamaRef, UnsupportedReference, parse_reference
from provisioner.vendors.base import Plan, inside
from provisioner.vendors.huggingface import git_blob_id

logger = logging.getLogger(__name__)

HF_CACHE = "hf-cache"
OLLAMA_STORE = "ollama-store"
#: How Ollama names its own registry in the store, and leaves it out of model names.
OLLAMA_DEFAULT_HOST = "registry.ollama.ai"
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def hf_cache_dir(root: Path) -> Path:
    return root / HF_CACHE


def ollama_store_dir(root: Path) -> Path:
    return root / OLLAMA_STORE


def hf_repo_dir(root: Path, repo_id: str) -> Path:
    return hf_cache_dir(root) / ("models--" + repo_id.replace("/", "--"))


def _place_blob(blob: Path, source: Path, *, replace: bool = False) -> None:
    """``blob`` becomes a hard link to ``source`` (a symlink across filesystems)."""
    if blob.exists() and not replace:
        return
    blob.parent.mkdir(parents=True, exist_ok=True)
    temporary = blob.with_name(blob.name + ".rbee-tmp")
    temporary.unlink(missing_ok=True)
    try:
        os.link(source, temporary)
    except OSError:
        os.symlink(source.resolve(), temporary)
    os.replace(temporary, blob)  # atomic: a reader sees the old blob or the new one


def _link(link: Path, target: Path) -> None:
    """A relative symlink, as huggingface_hub makes them, replacing what is there."""
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(os.path.relpath(target, link.parent))


# -- after an install -------------------------------------------------------------


def link_entry(entry: ModelEntry, plan: Plan) -> None:
    """Show a new entry to the engines; logged, never raised."""
    try:
        ref = parse_reference(entry.reference)
        if isinstance(ref, HuggingFaceRef):
            _link_hf(entry, ref, plan)
        elif isinstance(ref, OllamaRef):
            _link_ollama(entry, ref, plan)
    except (OSError, ValueError, UnsupportedReference):
        logger.exception("could not add %s to the engine views of %s", entry.reference, entry.root)


def _hf_etags(entry: ModelEntry, plan: Plan) -> dict[str, str]:
    """The blob name of each file: what the Hub's ETag is (and huggingface_hub names blobs by)."""
    blob_ids: dict[str, str] = plan.extra.get("git_blob_ids", {})
    folder = Path(entry.path)
    etags = {}
    for planned in plan.files:
        etag = planned.sha256 or blob_ids.get(planned.path) or git_blob_id(inside(folder, planned.path))
        etags[planned.path] = etag
    return etags


def _link_hf(entry: ModelEntry, ref: HuggingFaceRef, plan: Plan) -> None:
    if not _COMMIT.match(entry.revision):
        return  # the cache is keyed by commit; a source that gave none cannot be shown there
    repo = hf_repo_dir(entry.root, ref.repo_id)
    folder = Path(entry.path)
    for path, etag in _hf_etags(entry, plan).items():
        blob = repo / "blobs" / etag
        _place_blob(blob, inside(folder, path))
        _link(repo / "snapshots" / entry.revision / path, blob)
    ref_name = ref.revision or "main"
    if ref_name != entry.revision:
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref_name).parent.mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref_name).write_text(entry.revision)


def ollama_host(ref: OllamaRef) -> str:
    return ref.host or urlsplit(settings.RBEE_OLLAMA_REGISTRY).netloc or OLLAMA_DEFAULT_HOST


def ollama_name(ref: OllamaRef) -> str:
    """The name ``ollama run`` takes for this model in the store."""
    host = ollama_host(ref)
    if host == OLLAMA_DEFAULT_HOST:
        return ref.display_name
    return f"{host}/{ref.namespace}/{ref.model}:{ref.tag}"


def _ollama_manifest(store: Path, ref: OllamaRef) -> Path:
    return store / "manifests" / ollama_host(ref) / ref.namespace / ref.model / ref.tag


def _link_ollama(entry: ModelEntry, ref: OllamaRef, plan: Plan) -> None:
    store = ollama_store_dir(entry.root)
    folder = Path(entry.path)
    for planned in plan.files:
        if planned.path == "manifest.json" or not planned.sha256:
            continue
        _place_blob(store / "blobs" / f"sha256-{planned.sha256}", inside(folder, planned.path))
    manifest = _ollama_manifest(store, ref)
    manifest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(inside(folder, "manifest.json"), manifest)  # a few hundred bytes, exactly as served


# -- before a delete --------------------------------------------------------------


def unlink_entry(entry: ModelEntry) -> None:
    """Take an entry out of the engine views, keeping what other entries still show."""
    try:
        ref = parse_reference(entry.reference)
        if isinstance(ref, HuggingFaceRef):
            _unlink_hf(entry, ref)
        elif isinstance(ref, OllamaRef):
            _unlink_ollama(entry, ref)
    except (OSError, ValueError, UnsupportedReference):
        logger.exception("could not remove %s from the engine views of %s", entry.reference, entry.root)


def _others(entry: ModelEntry) -> list[ModelEntry]:
    """Entries on the same disk as ``entry`` with the same vendor."""
    return list(
        ModelEntry.objects.filter(models_root=entry.models_root, vendor=entry.vendor).exclude(pk=entry.pk)
    )


def _relink_or_remove(blob: Path, keepers: dict[str, Path]) -> None:
    """A blob still shown is re-pointed at a surviving file (so deleting the entry's
    file frees its bytes and the blob does not become a second copy); else removed."""
    source = keepers.get(blob.name.removeprefix("sha256-"))
    if source is not None and source.exists():
        _place_blob(blob, source, replace=True)
    else:
        blob.unlink(missing_ok=True)


def _unlink_hf(entry: ModelEntry, ref: HuggingFaceRef) -> None:
    repo = hf_repo_dir(entry.root, ref.repo_id)
    if not repo.is_dir():
        return
    survivors: dict[str, ModelEntry] = {}  # snapshot path -> an entry still holding it
    same_repo = []
    for other in _others(entry):
        try:
            other_ref = parse_reference(other.reference)
        except UnsupportedReference:
            continue
        if isinstance(other_ref, HuggingFaceRef) and other_ref.repo_id == ref.repo_id:
            same_repo.append((other, other_ref))
            for f in other.files.all():
                survivors.setdefault(f"{other.revision}/{f.path}", other)
    snapshot = repo / "snapshots" / entry.revision
    touched: set[Path] = set()
    for f in entry.files.all():
        link = snapshot / f.path
        if not link.is_symlink():
            continue
        blob = (link.parent / os.readlink(link)).resolve(strict=False)
        touched.add(repo / "blobs" / blob.name)
        if f"{entry.revision}/{f.path}" not in survivors:
            link.unlink()
    # Blobs no snapshot points at any more go; the rest are re-pointed at a survivor's file.
    pointed: dict[str, Path] = {}
    for link in (repo / "snapshots").rglob("*"):
        if link.is_symlink():
            relative = link.relative_to(repo / "snapshots")
            holder = survivors.get(relative.as_posix())
            if holder is not None:
                pointed[Path(os.readlink(link)).name] = Path(holder.path) / Path(*relative.parts[1:])
    for blob in touched:
        if blob.name in pointed:
            _place_blob(blob, pointed[blob.name], replace=True)
        else:
            blob.unlink(missing_ok=True)
    _prune_empty(snapshot, stop=repo / "snapshots")
    ref_name = ref.revision or "main"
    ref_file = repo / "refs" / ref_name
    still_named = any((r.revision or "main") == ref_name for _o, r in same_repo)
    if ref_file.exists() and not still_named:
        ref_file.unlink()
        _prune_empty(ref_file.parent, stop=repo / "refs")
    snapshots = repo / "snapshots"
    if not snapshots.is_dir() or not any(p.is_symlink() for p in snapshots.rglob("*")):
        shutil.rmtree(repo, ignore_errors=True)  # nothing of the repo is shown any more


def _unlink_ollama(entry: ModelEntry, ref: OllamaRef) -> None:
    store = ollama_store_dir(entry.root)
    manifest = _ollama_manifest(store, ref)
    if not any(_ollama_manifest(store, r) == manifest for _o, r in _ollama_others(entry)):
        manifest.unlink(missing_ok=True)
        _prune_empty(manifest.parent, stop=store / "manifests")
    keepers: dict[str, Path] = {}
    for other, _r in _ollama_others(entry):
        for f in other.files.all():
            if f.sha256 and f.path != "manifest.json":
                keepers.setdefault(f.sha256, Path(other.path) / f.path)
    for f in entry.files.all():
        if f.sha256 and f.path != "manifest.json":
            _relink_or_remove(store / "blobs" / f"sha256-{f.sha256}", keepers)


def _ollama_others(entry: ModelEntry) -> list[tuple[ModelEntry, OllamaRef]]:
    found = []
    for other in _others(entry):
        try:
            other_ref = parse_reference(other.reference)
        except UnsupportedReference:
            continue
        if isinstance(other_ref, OllamaRef):
            found.append((other, other_ref))
    return found


def _prune_empty(folder: Path, *, stop: Path) -> None:
    """Remove ``folder`` and its parents up to ``stop`` while they are empty."""
    for empty in sorted((p for p in folder.rglob("*") if p.is_dir()), reverse=True) if folder.is_dir() else []:
        try:
            empty.rmdir()
        except OSError:
            pass
    while folder != stop and folder.is_relative_to(stop):
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent


# -- what an engine is told -------------------------------------------------------


def engine_lines(entry: ModelEntry) -> list[dict[str, str]]:
    """The command lines that run this entry offline, per engine."""
    try:
        ref = parse_reference(entry.reference)
    except UnsupportedReference:
        return []
    folder = Path(entry.path)
    paths = [f.path for f in entry.files.all()]
    ggufs = sorted(p for p in paths if p.lower().endswith(".gguf") and not p.startswith(("mmproj", "projector")))
    lines = []
    if isinstance(ref, HuggingFaceRef) and _COMMIT.match(entry.revision) and not ggufs:
        lines.append(
            {
                "engine": "vLLM",
                "line": f"HF_HUB_CACHE={hf_cache_dir(entry.root)} HF_HUB_OFFLINE=1 "
                f"vllm serve {ref.repo_id} --revision {entry.revision}",
            }
        )
    if isinstance(ref, OllamaRef):
        lines.append(
            {"engine": "Ollama", "line": f"OLLAMA_MODELS={ollama_store_dir(entry.root)} ollama run {ollama_name(ref)}"}
        )
    if ggufs:
        lines.append({"engine": "llama.cpp", "line": f"llama-server -m {folder / ggufs[0]}"})
    return lines


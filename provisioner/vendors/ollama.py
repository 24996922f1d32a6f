"""Ollama registries: the OCI distribution (registry v2) protocol as Ollama speaks it.

A model is a manifest whose layers are typed blobs (weights, template, params,
license…). The manifest is fetched once at plan time and kept in the plan, so a
resumed job writes exactly the manifest it planned from; the blobs are fetched by
digest through the shared transfer, which verifies each one against its digest
and resumes with Range.

The configured registry (``RBEE_OLLAMA_REGISTRY``) is trusted, redirects to its
blob storage included; a registry named in the reference (``ollama:HOST/…``) is
what an admin typed, and every host it leads to is checked (transfer).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from django.conf import settings

from provisioner import metadata
from provisioner.references import OllamaRef, Reference, is_loopback
from provisioner.vendors import transfer
from provisioner.vendors.base import (
    AccessDenied,
    Cancelled,
    CancelToken,
    DownloadError,
    FetchResult,
    NetworkError,
    NotFound,
    Plan,
    PlannedFile,
    Progress,
    UnsafePath,
    VerificationError,
    inside,
)

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
_INDEXES = ("application/vnd.docker.distribution.manifest.list.v2+json", "application/vnd.oci.image.index.v1+json")
ACCEPT = f"{DOCKER_MANIFEST}, {OCI_MANIFEST}"
# A manifest is a few hundred bytes; anything near this is not one.
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_OLLAMA_PREFIX = "application/vnd.ollama.image."
# What each Ollama layer is called in the entry's folder: plain names a loader
# (llama.cpp, a worker) can open without knowing about registries.
LAYER_NAMES = {
    "model": "model.gguf",
    "template": "template",
    "params": "params.json",
    "system": "system",
    "license": "license",
    "projector": "projector.gguf",
    "adapter": "adapter.gguf",
    "messages": "messages.json",
}
# Names we write ourselves; a layer never takes one of them.
_RESERVED = {"manifest.json", "config.json"}
_BEARER_PARAM = re.compile(r'(\w+)="([^"]*)"')


def is_valid_digest(digest: object) -> bool:
    return isinstance(digest, str) and bool(_DIGEST.match(digest))


def is_configured_registry(base: str) -> bool:
    """Whether ``base`` is the operator's registry, trusted, rather than one typed in a reference."""
    return base.rstrip("/") == settings.RBEE_OLLAMA_REGISTRY.rstrip("/")


def registry_base(ref: OllamaRef) -> str:
    """The registry a reference points at: its HOST, else RBEE_OLLAMA_REGISTRY.

    Plain http only for loopback, so a typo cannot send a pull over the open network
    unencrypted.
    """
    if not ref.host:
        return settings.RBEE_OLLAMA_REGISTRY.rstrip("/")
    # parse_reference allows only HOST or HOST:PORT here, lower case.
    scheme = "http" if is_loopback(ref.host.rsplit(":", 1)[0]) else "https"
    return f"{scheme}://{ref.host}"


def layer_filename(media_type: str, taken: set[str]) -> str:
    """A plain, unique file name for a layer; unknown types get a sanitised name."""
    if media_type.startswith(_OLLAMA_PREFIX):
        kind = media_type.removeprefix(_OLLAMA_PREFIX)
    else:
        kind = media_type.rsplit("/", 1)[-1]
    name = LAYER_NAMES.get(kind)
    if name is None:
        name = re.sub(r"[^a-z0-9._-]+", "_", kind.lower()).strip("._-")[:64] or "layer"
    stem, dot, ext = name.partition(".")
    candidate, n = name, 1
    while candidate in taken or candidate in _RESERVED:
        n += 1
        candidate = f"{stem}-{n}{dot}{ext}"
    taken.add(candidate)
    return candidate


class OllamaVendor:
    name = "ollama"
    label = "Ollama"

    def supports(self, ref: Reference) -> bool:
        return isinstance(ref, OllamaRef)

    def validate(self, ref: Reference) -> None:
        """A typed registry inside the network is refused on the form."""
        assert isinstance(ref, OllamaRef)
        base = registry_base(ref)
        if not is_configured_registry(base):
            transfer.check_typed_url(f"{base}/v2/", name_may_be_remote=True)

    def plan(self, ref: Reference) -> Plan:
        assert isinstance(ref, OllamaRef)
        base = registry_base(ref)
        repository = f"{ref.namespace}/{ref.model}"
        url = f"{base}/v2/{repository}/manifests/{ref.tag}"
        headers = {"Accept": ACCEPT}
        raw, token_auth = self._get_manifest(headers, url, ref, base, trusted=is_configured_registry(base))
        digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        manifest = self._parse(raw, ref)
        files: list[PlannedFile] = []
        taken: set[str] = set()
        entries: list[tuple[dict[str, Any], str]] = [(layer, "") for layer in manifest["layers"]]
        if manifest.get("config"):
            entries.append((manifest["config"], "config.json"))
        for descriptor, fixed_name in entries:
            blob_digest, size, media_type = self._descriptor(descriptor, ref)
            name = fixed_name or layer_filename(media_type, taken)
            files.append(
                PlannedFile(
                    path=name,
                    size=size,
                    sha256=blob_digest.removeprefix("sha256:"),
                    url=f"{base}/v2/{repository}/blobs/{blob_digest}",
                    media_type=media_type,
                )
            )
        manifest_type = manifest.get("mediaType") or OCI_MANIFEST
        files.append(
            PlannedFile(
                path="manifest.json",
                size=len(raw),
                sha256=digest.removeprefix("sha256:"),
                url=url,
                media_type=manifest_type,
            )
        )
        return Plan(
            vendor=self.name,
            reference=ref.canonical,
            revision=digest,
            files=files,
            extra={
                "registry": base,
                "repository": repository,
                "tag": ref.tag,
                # Kept so a resumed job writes the very manifest it planned from,
                # without asking a registry whose tag may have moved since.
                "manifest": raw.decode("utf-8"),
                "token_auth": token_auth,
            },
        )

    def _get_manifest(
        self, headers: dict[str, str], url: str, ref: OllamaRef, base: str, *, trusted: bool
    ) -> tuple[bytes, bool]:
        """The manifest bytes, exactly as served (its digest is over these bytes)."""
        token_auth = False
        status, answer, raw = self._read_limited(headers, url, trusted=trusted)
        if status == 401 and self._authorize(headers, answer, trusted=trusted):
            token_auth = True
            status, answer, raw = self._read_limited(headers, url, trusted=trusted)
        if status == 404:
            raise NotFound(f"model or tag not found: {ref.display_name} is not in the registry at {base}")
        if status in (401, 403):
            raise AccessDenied(f"the Ollama registry at {base} refused access to {ref.display_name} ({status})")
        if status == 429 or status >= 500:
            raise NetworkError(f"the Ollama registry at {base} answered {status}; try again later")
        if status != 200:
            raise DownloadError(f"the Ollama registry at {base} answered {status} for {ref.display_name}")
        served = answer.get("docker-content-digest", "")
        computed = "sha256:" + hashlib.sha256(raw).hexdigest()
        if served.startswith("sha256:") and served != computed:
            shown = served if is_valid_digest(served) else "another digest"
            raise VerificationError(
                f"the manifest of {ref.display_name} does not match the digest the registry gave "
                f"({shown}, computed {computed})"
            )
        return raw, token_auth

    def _read_limited(self, headers: dict[str, str], url: str, *, trusted: bool) -> tuple[int, dict[str, str], bytes]:
        with transfer.request("GET", url, headers=headers, trusted=trusted) as response:
            if response.status_code != 200:
                return response.status_code, response.headers, b""
            return response.status_code, response.headers, response.read(MAX_MANIFEST_BYTES)

    def _authorize(self, headers: dict[str, str], answer: dict[str, str], *, trusted: bool) -> bool:
        """Answer a ``Bearer realm=…`` challenge with an anonymous pull token.

        Docker Hub-style registries want this even for public images; a token is
        asked for anonymously (no credentials are configured for Ollama) and then
        sent, in ``headers``, on every later request. The realm is checked like the
        registry that named it. Returns False when there is nothing we can answer,
        so the caller reports the 401.
        """
        challenge = answer.get("www-authenticate", "")
        if not challenge.lower().startswith("bearer "):
            return False
        params = dict(_BEARER_PARAM.findall(challenge))
        realm = params.pop("realm", "")
        parts = urlsplit(realm)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            return False
        if parts.scheme == "http" and not is_loopback(parts.hostname):
            return False
        query = urlencode({k: v for k, v in params.items() if k in ("service", "scope")})
        token_url = f"{realm}{'&' if '?' in realm else '?'}{query}" if query else realm
        with transfer.request("GET", token_url, trusted=trusted) as response:
            if response.status_code != 200:
                return False
            body = response.read(MAX_MANIFEST_BYTES)
        try:
            data = json.loads(body)
        except ValueError:
            return False
        token = data.get("token") or data.get("access_token") if isinstance(data, dict) else None
        if not isinstance(token, str) or not token:
            return False
        headers["Authorization"] = f"Bearer {token}"
        return True

    def _parse(self, raw: bytes, ref: OllamaRef) -> dict[str, Any]:
        try:
            manifest = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise DownloadError(f"the registry's manifest for {ref.display_name} is not valid JSON") from None
        if not isinstance(manifest, dict):
            raise DownloadError(f"the registry's manifest for {ref.display_name} is not a JSON object")
        media_type = manifest.get("mediaType")
        if media_type in _INDEXES or "manifests" in manifest:
            raise DownloadError(
                f"{ref.display_name} is a multi-platform image index, not an Ollama model", kind="not_a_model"
            )
        if manifest.get("schemaVersion") != 2 or media_type not in (None, DOCKER_MANIFEST, OCI_MANIFEST):
            raise DownloadError(
                f"{ref.display_name}: the registry's manifest is not a schema 2 image manifest", kind="not_a_model"
            )
        layers = manifest.get("layers")
        if not isinstance(layers, list) or not layers or not all(isinstance(x, dict) for x in layers):
            raise DownloadError(f"the manifest of {ref.display_name} lists no layers", kind="not_a_model")
        config = manifest.get("config")
        if config is not None and not isinstance(config, dict):
            raise DownloadError(f"the manifest of {ref.display_name} has a malformed config", kind="not_a_model")
        if not any(x.get("mediaType") == f"{_OLLAMA_PREFIX}model" for x in layers):
            raise DownloadError(
                f"{ref.display_name} has no model weights layer ({_OLLAMA_PREFIX}model); not an Ollama model",
                kind="not_a_model",
            )
        return manifest

    def _descriptor(self, descriptor: dict[str, Any], ref: OllamaRef) -> tuple[str, int, str]:
        """Digest, size and media type of a layer, refused unless the digest is a plain sha256.

        The digest ends up in a URL path, so ``sha256:../../x`` must never get that far.
        """
        digest = descriptor.get("digest")
        if not is_valid_digest(digest):
            raise UnsafePath(f"refusing the manifest of {ref.display_name}: a layer digest is not sha256:<64 hex>")
        size = descriptor.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise DownloadError(f"the manifest of {ref.display_name} gives no valid size for {digest}")
        media_type = descriptor.get("mediaType")
        if not isinstance(media_type, str) or not media_type:
            media_type = "application/octet-stream"
        return str(digest), size, media_type[:128]

    def fetch(self, plan: Plan, dest: Path, progress: Progress, cancelled: CancelToken) -> FetchResult:
        trusted = is_configured_registry(str(plan.extra.get("registry", "")))
        headers = {"Accept": ACCEPT}
        if plan.extra.get("token_auth"):
            self._refresh_token(headers, plan, trusted=trusted)
        digests: dict[str, str] = {}
        blobs = []
        for planned in plan.files:
            if cancelled():
                raise Cancelled()
            if planned.path == "manifest.json":
                digest = self._write_manifest(plan, planned, inside(dest, planned.path))
                progress.file_done(planned.path, planned.size, digest)
                digests[planned.path] = digest
            elif not planned.url.endswith("/blobs/sha256:" + (planned.sha256 or "")) or not is_valid_digest(
                "sha256:" + (planned.sha256 or "")
            ):
                raise UnsafePath(f"refusing {planned.path}: its blob URL does not name its sha256 digest")
            else:
                blobs.append(planned)
        digests.update(transfer.fetch_files(blobs, dest, progress, cancelled, headers=headers, trusted=trusted))
        return FetchResult(sha256=digests)

    def describe(self, plan: Plan) -> dict[str, Any]:
        """What the model is, from its weights layer's GGUF header, read by Range."""
        trusted = is_configured_registry(str(plan.extra.get("registry", "")))
        headers = {"Accept": ACCEPT}
        if plan.extra.get("token_auth"):
            self._refresh_token(headers, plan, trusted=trusted)
        urls = {f.path: f.url for f in plan.files if f.path == "model.gguf"}
        return metadata.describe(sorted(urls), metadata.remote_reader(urls, headers=headers, trusted=trusted))

    def _refresh_token(self, headers: dict[str, str], plan: Plan, *, trusted: bool) -> None:
        """A resumed job gets a fresh pull token: the one from plan time has expired."""
        url = next(f.url for f in plan.files if f.path == "manifest.json")
        with transfer.request("GET", url, headers=headers, trusted=trusted) as response:
            status, answer = response.status_code, response.headers
        if status == 401:
            self._authorize(headers, answer, trusted=trusted)

    def _write_manifest(self, plan: Plan, planned: PlannedFile, target: Path) -> str:
        raw = str(plan.extra.get("manifest", "")).encode("utf-8")
        digest = hashlib.sha256(raw).hexdigest()
        if digest != planned.sha256 or len(raw) != planned.size:
            raise VerificationError("manifest.json: the stored manifest does not match its digest")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(raw)
        return digest

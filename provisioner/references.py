"""Model references: parsed once into a typed value, normalised to one canonical string.

The canonical string is the catalog key, so two spellings of the same model
(``ollama:llama3.2`` and ``ollama:library/llama3.2:latest``) land on one entry.
"""

from __future__ import annotations

import hashlib
import ipaddress
import posixpath
import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit, urlunsplit

SUPPORTED_FORMS = [
    ("Hugging Face", "[hf:]ORG/NAME[@REVISION][:SELECTOR]", "meta-llama/Llama-3.2-1B, TheBloke/X-GGUF:Q4_K_M"),
    ("Ollama", "ollama:[HOST/][NAMESPACE/]MODEL[:TAG]", "ollama:llama3.2:1b"),
    ("Local file or folder", "file:/ABSOLUTE/PATH", "file:/srv/models/foo.gguf"),
    ("URL", "https://HOST/PATH/FILE[#sha256=HEX]", "https://example.com/m.gguf"),
]


class UnsupportedReference(ValueError):
    """No vendor understands this text; the message lists the forms that work."""

    def __init__(self, text: str, reason: str = "") -> None:
        forms = "; ".join(f"{label}: {form}" for label, form, _ in SUPPORTED_FORMS)
        detail = f" ({reason})" if reason else ""
        super().__init__(f"No vendor supports '{text}'{detail}. Supported forms: {forms}")
        self.text = text
        self.reason = reason


_HF_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9_])?"
_HF_RE = re.compile(
    rf"^(?P<repo>{_HF_PART}/{_HF_PART})(?:@(?P<revision>[^:\s@]+))?(?::(?P<selector>[^\s:]+))?$"
)
_OLLAMA_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_HOST = re.compile(r"^(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*(?::[0-9]{1,5})?$")
_OLLAMA_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
# A GGUF quant tag (Q4_K_M, IQ3_XXS, F16, BF16): typed in any case, one catalog entry.
_QUANT_TAG = re.compile(r"^[A-Za-z0-9_]+$")
_FOLDER_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
# A link to a Hub page is read as the Hugging Face reference it shows, not downloaded as a web page.
_HF_HOSTS = {"huggingface.co", "www.huggingface.co", "hf.co"}


def _has_dot_segment(text: str) -> bool:
    """A ``.`` or ``..`` path segment, also when percent-encoded (``%2e%2E``)."""
    decoded = unquote(text)
    return any(part in (".", "..") for part in re.split(r"[/\\]", decoded))


def _folder_part(text: str, canonical: str) -> str:
    """One path component for ``text``, unique per canonical reference.

    Where making it safe changes the text (``a/b`` and ``a_b`` would both become
    ``a_b``), a short hash of the canonical string keeps two references apart.
    """
    safe = _FOLDER_UNSAFE.sub("_", text).lstrip(".") or "_"
    if safe != text:
        safe += "~" + hashlib.sha256(canonical.encode()).hexdigest()[:10]
    return safe


@dataclass(frozen=True)
class HuggingFaceRef:
    repo_id: str
    revision: str | None = None
    selector: str | None = None

    @property
    def canonical(self) -> str:
        text = f"hf:{self.repo_id}"
        if self.revision:
            text += f"@{self.revision}"
        if self.selector:
            text += f":{self.selector}"
        return text

    @property
    def display_name(self) -> str:
        return self.repo_id + (f":{self.selector}" if self.selector else "")

    @property
    def folder(self) -> str:
        """Where the entry lives below the models dir: ``huggingface/ORG/NAME…``, one
        folder per canonical string, never nested in another entry's folder."""
        org, name = self.repo_id.split("/")
        leaf = name
        if self.revision:
            leaf += "@" + self.revision
        if self.selector:
            leaf += "--" + self.selector
        return f"huggingface/{org}/{_folder_part(leaf, self.canonical)}"


@dataclass(frozen=True)
class OllamaRef:
    host: str | None
    namespace: str
    model: str
    tag: str

    @property
    def canonical(self) -> str:
        host = f"{self.host}/" if self.host else ""
        return f"ollama:{host}{self.namespace}/{self.model}:{self.tag}"

    @property
    def display_name(self) -> str:
        ns = "" if self.namespace == "library" else f"{self.namespace}/"
        return f"{ns}{self.model}:{self.tag}"

    @property
    def folder(self) -> str:
        host = _folder_part(self.host, self.canonical) if self.host else "default"
        return f"ollama/{host}/{self.namespace}/{self.model}/{self.tag}"


@dataclass(frozen=True)
class FileRef:
    path: str

    @property
    def canonical(self) -> str:
        return f"file:{self.path}"

    @property
    def display_name(self) -> str:
        return posixpath.basename(self.path) or self.path

    @property
    def folder(self) -> str:
        return "local/" + _folder_part(self.path.strip("/"), self.canonical)


@dataclass(frozen=True)
class UrlRef:
    url: str
    sha256: str | None = None

    @property
    def canonical(self) -> str:
        return self.url + (f"#sha256={self.sha256}" if self.sha256 else "")

    @property
    def filename(self) -> str:
        return posixpath.basename(urlsplit(self.url).path)

    @property
    def display_name(self) -> str:
        return self.filename or self.url

    @property
    def folder(self) -> str:
        """``url/HOST/FILE~HASH``: the hash covers the whole canonical string (path, query,
        ``#sha256``), so two URLs never share a folder and none nests in another."""
        parts = urlsplit(self.url)
        host = _FOLDER_UNSAFE.sub("_", parts.netloc)
        name = _FOLDER_UNSAFE.sub("_", unquote(posixpath.basename(parts.path))).lstrip(".")[:80] or "file"
        return f"url/{host}/{name}~{hashlib.sha256(self.canonical.encode()).hexdigest()[:16]}"


Reference = HuggingFaceRef | OllamaRef | FileRef | UrlRef


def parse_reference(text: str) -> Reference:
    """Turn what an admin typed into a typed reference, or raise UnsupportedReference."""
    text = text.strip()
    if not text:
        raise UnsupportedReference(text, "empty reference")
    if text.startswith("ollama:"):
        return _parse_ollama(text)
    if text.startswith("file:"):
        return _parse_file(text)
    if text.startswith(("https://", "http://")):
        if (urlsplit(text).hostname or "").lower() in _HF_HOSTS:
            return _parse_hf_link(text)
        return _parse_url(text)
    return _parse_hf(text)


def _parse_hf_link(text: str) -> HuggingFaceRef:
    """A Hub page pasted from the browser, as the Hugging Face reference it shows.

    ``/ORG/NAME`` is the repo; ``/tree/REV[/FOLDER]``, ``/blob/REV/FILE`` and
    ``/resolve/REV/FILE`` add the revision and a selector for that folder or file.
    ``main`` is left out: it is the revision a reference without one follows, and
    one model should have one catalog key however it was pasted.
    """
    segments = [unquote(s) for s in urlsplit(text).path.split("/") if s]
    if segments and segments[0] in ("datasets", "spaces", "collections", "papers"):
        raise UnsupportedReference(text, f"a Hugging Face {segments[0].rstrip('s')} page is not a model")
    if len(segments) < 2:
        raise UnsupportedReference(text, "a Hugging Face link must name a model repo: https://huggingface.co/ORG/NAME")
    repo, rest = "/".join(segments[:2]), segments[2:]
    revision, selector = None, None
    if rest:
        view = rest[0]
        if view not in ("tree", "blob", "resolve") or len(rest) < 2 or (view != "tree" and len(rest) < 3):
            raise UnsupportedReference(text, "expected a repo, tree, blob or resolve link")
        revision = None if rest[1] == "main" else rest[1]
        path = "/".join(rest[2:])
        if path:
            selector = path if view != "tree" else f"{path}/*"
    body = repo + (f"@{revision}" if revision else "") + (f":{selector}" if selector else "")
    try:
        return _parse_hf(body)
    except UnsupportedReference as exc:
        raise UnsupportedReference(text, exc.reason or "not a Hugging Face model link") from None


def _parse_hf(text: str) -> HuggingFaceRef:
    body = text.removeprefix("hf:")
    match = _HF_RE.match(body)
    if not match or ".." in match["repo"] or "--" in match["repo"]:
        raise UnsupportedReference(text)
    revision = match["revision"]
    if revision and (
        ".." in revision or revision.startswith("/") or revision.endswith("/") or _has_dot_segment(revision)
    ):
        raise UnsupportedReference(text, "invalid revision")
    selector = match["selector"]
    if selector and (_has_dot_segment(selector) or selector.startswith("/")):
        raise UnsupportedReference(text, "a selector names files inside the repo, never '.' or '..'")
    if selector and _QUANT_TAG.match(selector):
        selector = selector.upper()  # a quant tag: one catalog entry however it is typed
    return HuggingFaceRef(repo_id=match["repo"], revision=revision, selector=selector)


def _parse_ollama(text: str) -> OllamaRef:
    body = text.removeprefix("ollama:")
    name, _, tag = body.partition(":")
    # A host may carry a port ("localhost:5000/llama3"): the tag is after the last slash.
    if "/" in tag:
        host_port, _, rest = body.partition("/")
        name, _, tag = rest.partition(":")
        name = f"{host_port}/{name}"
    parts = name.split("/")
    host = None
    if len(parts) >= 2 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        host = parts.pop(0).lower()
        if not _HOST.match(host):
            raise UnsupportedReference(text, f"'{host}' is not a registry host name")
    if len(parts) == 1:
        parts.insert(0, "library")
    if len(parts) != 2 or not all(_OLLAMA_NAME.match(p) for p in parts):
        raise UnsupportedReference(text, "expected ollama:[HOST/][NAMESPACE/]MODEL[:TAG]")
    tag = tag or "latest"
    if not _OLLAMA_TAG.match(tag):
        raise UnsupportedReference(text, "invalid tag")
    return OllamaRef(host=host, namespace=parts[0], model=parts[1], tag=tag)


def _parse_file(text: str) -> FileRef:
    path = text.removeprefix("file:")
    if path.startswith("//"):
        path = path[2:] if path.startswith("///") else path
    if not path.startswith("/"):
        raise UnsupportedReference(text, "file: needs an absolute path")
    if _has_dot_segment(path):
        raise UnsupportedReference(text, "a path with '.' or '..' segments; give the real path")
    return FileRef(path=posixpath.normpath(path))


def _parse_url(text: str) -> UrlRef:
    parts = urlsplit(text)
    if not parts.hostname or not parts.path or parts.path.endswith("/"):
        raise UnsupportedReference(text, "a URL must name one file")
    if _has_dot_segment(parts.path):
        raise UnsupportedReference(text, "a URL path with '.' or '..' segments")
    sha256 = None
    if parts.fragment:
        key, _, value = parts.fragment.partition("=")
        if key != "sha256" or not _SHA256_HEX.match(value.lower()):
            raise UnsupportedReference(text, "the only fragment understood is #sha256=<64 hex digits>")
        sha256 = value.lower()
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise UnsupportedReference(text, "plain http:// is only allowed for loopback; use https://")
    netloc = parts.netloc.lower() if "@" not in parts.netloc else None
    if netloc is None:
        raise UnsupportedReference(text, "credentials in URLs are not supported")
    url = urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
    return UrlRef(url=url, sha256=sha256)


def is_loopback(host: str) -> bool:
    """Exactly localhost or a loopback IP: ``127.0.0.1.example.com`` is not one."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False

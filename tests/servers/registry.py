"""A real OCI registry for tests: Debian's ``docker-registry`` (distribution 2.8).

The Ollama vendor speaks the registry v2 protocol, and a hand-written fake would
only agree with our own reading of it. So the tests run the reference
implementation on 127.0.0.1 with a throwaway storage folder, and push Ollama-format
models into it through its HTTP API, the way ``ollama push`` does.

Usage::

    with OciRegistry() as registry:
        digest = registry.push_ollama_model("library", "tiny", "latest", {
            "application/vnd.ollama.image.model": gguf_bytes,
            "application/vnd.ollama.image.template": b"{{ .Prompt }}",
        })
        # settings.RBEE_OLLAMA_REGISTRY = registry.url

The registry is a subprocess: it is stopped by ``stop()``/the context manager, at
interpreter exit, and (on Linux) by the kernel if the test process dies first.
"""

from __future__ import annotations

import atexit
import ctypes
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import urljoin

import httpx

__all__ = ["CONFIG_MEDIA_TYPE", "MANIFEST_MEDIA_TYPE", "OciRegistry", "find_binary"]

MANIFEST_MEDIA_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_MEDIA_TYPE = "application/vnd.docker.container.image.v1+json"
BINARY_NAMES = ("docker-registry", "registry")
START_TIMEOUT_S = 15.0

Layers = Mapping[str, bytes] | Sequence[tuple[str, bytes]]


def find_binary() -> str | None:
    """``/usr/bin/docker-registry`` (Debian), or a ``registry`` binary on PATH."""
    for name in BINARY_NAMES:
        found = shutil.which(name) or (f"/usr/bin/{name}" if os.access(f"/usr/bin/{name}", os.X_OK) else None)
        if found:
            return found
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


try:  # looked up once here: the child between fork and exec should do as little as possible
    _prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None
except (OSError, AttributeError):
    _prctl = None


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it when the test process dies (Linux)."""
    if _prctl is not None:
        _prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class OciRegistry:
    """One ``docker-registry serve`` process with its own storage and port."""

    def __init__(self, binary: str | None = None) -> None:
        self.binary = binary or find_binary()
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._client = httpx.Client(timeout=10.0)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``, for references that name the registry (``ollama:HOST/ns/model``)."""
        return f"127.0.0.1:{self.port}"

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> OciRegistry:
        if self.binary is None:
            raise RuntimeError(
                "docker-registry is not installed: `apt-get install -y docker-registry` (or `make deps`)"
            )
        self._tmp = tempfile.TemporaryDirectory(prefix="oci-registry-", ignore_cleanup_errors=True)
        root = Path(self._tmp.name)
        atexit.register(self.stop)
        last_error = ""
        # A free port can be taken between probing and binding: try a few.
        for _ in range(3):
            self.port = _free_port()
            config = root / "config.yml"
            config.write_text(self._config(root / "storage"))
            log = open(root / "registry.log", "wb")
            self.process = subprocess.Popen(
                [self.binary, "serve", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent if _prctl is not None else None,
            )
            log.close()
            if self._wait_ready():
                return self
            last_error = (root / "registry.log").read_text(errors="replace")[-2000:]
            self._kill()
        self.stop()
        raise RuntimeError(f"docker-registry did not start: {last_error}")

    def _config(self, storage: Path) -> str:
        return (
            "version: 0.1\n"
            "log:\n"
            "  level: error\n"
            "  accesslog:\n"
            "    disabled: true\n"
            "storage:\n"
            "  filesystem:\n"
            f"    rootdirectory: {storage}\n"
            "  delete:\n"
            "    enabled: true\n"
            "http:\n"
            f"  addr: 127.0.0.1:{self.port}\n"
        )

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                return False
            try:
                if self._client.get(f"{self.url}/v2/", timeout=1.0).status_code == 200:
                    return True
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        return False

    def _kill(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    def stop(self) -> None:
        """Kill the process and remove its storage. Idempotent."""
        self._kill()
        self._client.close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
        atexit.unregister(self.stop)

    def __enter__(self) -> OciRegistry:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- pushing -------------------------------------------------------------------

    def push_blob(self, repository: str, data: bytes) -> str:
        """Monolithic upload: POST to open an upload, PUT the bytes with their digest."""
        digest = digest_of(data)
        opened = self._client.post(f"{self.url}/v2/{repository}/blobs/uploads/")
        if opened.status_code != 202:
            raise RuntimeError(f"registry refused to open an upload: {opened.status_code} {opened.text}")
        location = urljoin(f"{self.url}/", opened.headers["Location"])
        separator = "&" if "?" in location else "?"
        put = self._client.put(
            f"{location}{separator}digest={digest}",
            content=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        if put.status_code != 201:
            raise RuntimeError(f"registry refused the blob {digest}: {put.status_code} {put.text}")
        return digest

    def push_manifest(
        self, repository: str, reference: str, manifest: bytes, media_type: str = MANIFEST_MEDIA_TYPE
    ) -> str:
        response = self._client.put(
            f"{self.url}/v2/{repository}/manifests/{reference}",
            content=manifest,
            headers={"Content-Type": media_type},
        )
        if response.status_code != 201:
            raise RuntimeError(f"registry refused the manifest: {response.status_code} {response.text}")
        return response.headers.get("Docker-Content-Digest") or digest_of(manifest)

    def push_ollama_model(self, namespace: str, model: str, tag: str, layers: Layers) -> str:
        """Push a model the way ``ollama push`` lays it out; return the manifest digest.

        ``layers`` maps media types to bytes, or is a list of pairs when a type
        repeats (several licenses).
        """
        repository = f"{namespace}/{model}"
        pairs = list(layers.items()) if isinstance(layers, Mapping) else list(layers)
        descriptors = []
        for media_type, data in pairs:
            descriptors.append({"mediaType": media_type, "digest": self.push_blob(repository, data), "size": len(data)})
        config = json.dumps(
            {
                "model_format": "gguf",
                "model_family": "llama",
                "model_families": ["llama"],
                "model_type": "1B",
                "file_type": "Q4_K_M",
                "architecture": "amd64",
                "os": "linux",
                "rootfs": {"type": "layers", "diff_ids": [d["digest"] for d in descriptors]},
            },
            separators=(",", ":"),
        ).encode()
        config_descriptor = {
            "mediaType": CONFIG_MEDIA_TYPE,
            "digest": self.push_blob(repository, config),
            "size": len(config),
        }
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": MANIFEST_MEDIA_TYPE,
                "config": config_descriptor,
                "layers": descriptors,
            },
            separators=(",", ":"),
        ).encode()
        return self.push_manifest(repository, tag, manifest)

    def delete_tag(self, repository: str, tag: str) -> None:
        """Remove a tag's manifest (storage delete is enabled), e.g. to make a tag vanish."""
        head = self._client.head(
            f"{self.url}/v2/{repository}/manifests/{tag}", headers={"Accept": MANIFEST_MEDIA_TYPE}
        )
        digest = head.headers["Docker-Content-Digest"]
        response = self._client.delete(f"{self.url}/v2/{repository}/manifests/{digest}")
        if response.status_code != 202:
            raise RuntimeError(f"registry refused to delete {repository}:{tag}: {response.status_code}")

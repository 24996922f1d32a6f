"""What a model is, read before its weights are downloaded.

A GGUF file and a safetensors file both start with a header that says everything
about the model but its weights: the GGUF key/value pairs and tensor table, the
safetensors JSON. Both are read from a ranged prefix of the file, so a preview
costs a few hundred KiB however big the model is. A server that ignores Range
sends the whole file; we read the prefix and close the connection.

The GGUF header is parsed here rather than with the ``gguf`` package: its reader
memory-maps a complete local file, and a prefix is not one. The tests write real
files with ``gguf`` and check this reader against its.
"""

from __future__ import annotations

import json
import math
import posixpath
import struct
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from provisioner.vendors import transfer
from provisioner.vendors.base import DownloadError, inside

#: A first look at a GGUF file; doubled while the header is longer (a 150k-token
#: vocabulary makes it a few MiB), up to the cap.
GGUF_FIRST_BYTES = 1024 * 1024
GGUF_MAX_HEADER_BYTES = 64 * 1024 * 1024
#: The safetensors format caps its JSON header at 100 MB.
SAFETENSORS_MAX_HEADER_BYTES = 100_000_000
CONFIG_MAX_BYTES = 4 * 1024 * 1024
#: Shards whose headers are read for the parameter count (a 405B model has 191).
MAX_SHARDS = 256
SHARD_READERS = 8

#: ``general.file_type`` values (llama.cpp's ``llama_ftype``) as the quant names the Hub uses.
FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
    11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S",
    17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS",
    23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S",
    29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0", 37: "TQ2_0",
}  # fmt: skip

_GGUF_MAGIC = b"GGUF"
# Value types of GGUF key/value pairs: struct formats of the fixed-size ones.
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


class _Truncated(Exception):
    """The prefix ends inside the header: read more."""


class _Cursor:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise _Truncated()
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def unpack(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        return self.take(self.unpack("<Q")).decode("utf-8", "replace")

    def value(self, kind: int, *, keep: bool = True) -> Any:
        if kind in _SCALARS:
            return self.unpack(_SCALARS[kind])
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            item_kind, count = self.unpack("<I"), self.unpack("<Q")
            if item_kind in _SCALARS and not keep:
                self.take(count * struct.calcsize(_SCALARS[item_kind]))
                return None
            # Vocabularies are arrays of 100k+ strings: skipped, only their length kept.
            items = [self.value(item_kind, keep=keep and count <= 64) for _ in range(count)]
            return items if keep and count <= 64 else count
        raise ValueError(f"unknown GGUF value type {kind}")


def parse_gguf_header(data: bytes) -> dict[str, Any]:
    """Key/value pairs and tensor table of a GGUF file from its first bytes.

    Raises _Truncated when ``data`` ends inside the header, ValueError when it is not
    a little-endian GGUF v2/v3 file.
    """
    cur = _Cursor(data)
    if cur.take(4) != _GGUF_MAGIC:
        raise ValueError("not a GGUF file (no GGUF magic)")
    version = cur.unpack("<I")
    if version not in (2, 3):
        raise ValueError(f"unsupported GGUF version {version} (big-endian or too old)")
    tensor_count, kv_count = cur.unpack("<Q"), cur.unpack("<Q")
    fields: dict[str, Any] = {}
    for _ in range(kv_count):
        key = cur.string()
        kind = cur.unpack("<I")
        fields[key] = cur.value(kind, keep=not key.startswith("tokenizer.ggml."))
    parameters = 0
    types: dict[int, int] = {}
    for _ in range(tensor_count):
        cur.string()
        dims = [cur.unpack("<Q") for _ in range(cur.unpack("<I"))]
        kind = cur.unpack("<I")
        cur.unpack("<Q")
        elements = math.prod(dims)
        parameters += elements
        types[kind] = types.get(kind, 0) + elements
    return {"version": version, "fields": fields, "parameters": parameters, "tensor_types": types}


def summarize_gguf(header: Mapping[str, Any]) -> dict[str, Any]:
    """The facts an admin (and the fit estimate) needs, from a parsed GGUF header."""
    fields = header["fields"]
    arch = str(fields.get("general.architecture", ""))

    def arch_int(key: str) -> int | None:
        value = fields.get(f"{arch}.{key}")
        if isinstance(value, list):  # per-layer values (some hybrid models): the largest
            value = max((v for v in value if isinstance(v, int)), default=None)
        return int(value) if isinstance(value, int) and not isinstance(value, bool) else None

    heads = arch_int("attention.head_count")
    embedding = arch_int("embedding_length")
    head_dim = arch_int("attention.key_length") or (embedding // heads if embedding and heads else None)
    file_type = fields.get("general.file_type")
    quant = FILE_TYPES.get(file_type) if isinstance(file_type, int) else None
    summary = {
        "format": "gguf",
        "architecture": arch or None,
        "name": fields.get("general.name") if isinstance(fields.get("general.name"), str) else None,
        # A split model's first shard holds the header but only its share of the tensors.
        "parameters": header["parameters"] if int(fields.get("split.count") or 1) <= 1 else None,
        "context_length": arch_int("context_length"),
        "layers": arch_int("block_count"),
        "heads": heads,
        "kv_heads": arch_int("attention.head_count_kv") or heads,
        "embedding": embedding,
        "head_dim": head_dim,
        "quant": quant,
        "chat_template": isinstance(fields.get("tokenizer.chat_template"), str),
    }
    return {k: v for k, v in summary.items() if v is not None}


def summarize_safetensors(headers: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Parameter count and dtypes over every shard's JSON header."""
    parameters = 0
    dtypes: dict[str, int] = {}
    for header in headers:
        for name, tensor in header.items():
            if name == "__metadata__" or not isinstance(tensor, dict):
                continue
            count = math.prod(int(d) for d in tensor.get("shape", []))
            parameters += count
            dtype = str(tensor.get("dtype", "?"))
            dtypes[dtype] = dtypes.get(dtype, 0) + count
    return {"format": "safetensors", "parameters": parameters, "dtypes": dtypes}


def summarize_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A transformers ``config.json`` in the same words as a GGUF summary."""
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    assert isinstance(text, Mapping)

    def number(*keys: str) -> int | None:
        for key in keys:
            value = text.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        return None

    heads = number("num_attention_heads", "n_head")
    embedding = number("hidden_size", "n_embd", "d_model")
    architectures = config.get("architectures")
    summary = {
        "architecture": config.get("model_type") if isinstance(config.get("model_type"), str) else None,
        "architectures": architectures if isinstance(architectures, list) else None,
        "context_length": number("max_position_embeddings", "n_positions", "max_sequence_length"),
        "layers": number("num_hidden_layers", "n_layer"),
        "heads": heads,
        "kv_heads": number("num_key_value_heads") or heads,
        "embedding": embedding,
        "head_dim": number("head_dim") or (embedding // heads if embedding and heads else None),
        "torch_dtype": config.get("torch_dtype") or config.get("dtype"),
    }
    return {k: v for k, v in summary.items() if v is not None}


# -- reading from the source ------------------------------------------------------------


def _host(url: str) -> str:
    return urlsplit(url).netloc


def read_prefix(url: str, count: int, *, headers: Mapping[str, str], trusted: bool) -> bytes:
    """The first ``count`` bytes of a remote file (fewer if it is shorter)."""
    with transfer.request("GET", url, headers={**headers, "Range": f"bytes=0-{count - 1}"}, trusted=trusted) as resp:
        if resp.status_code not in (200, 206):
            raise DownloadError(f"{_host(url)} answered {resp.status_code} for a file's header")
        # 200: the server ignored Range and sends everything; take the prefix and hang up
        # (reading the http.client response below transfer's whole-body read).
        chunks, have = [], 0
        while have < count:
            try:
                chunk = resp.resp.read(min(count - have, 1024 * 1024))
            except OSError as exc:
                raise DownloadError(f"reading a file's header from {_host(url)}: {exc}") from None
            if not chunk:
                break
            chunks.append(chunk)
            have += len(chunk)
        return b"".join(chunks)


#: Reads the first ``count`` bytes of one of a model's files (fewer if it is shorter).
ReadPrefix = Callable[[str, int], bytes]


def gguf_summary(read: ReadPrefix, path: str) -> dict[str, Any]:
    """Summary of a GGUF file, from as few bytes as its header takes."""
    count = GGUF_FIRST_BYTES
    while True:
        data = read(path, count)
        try:
            return summarize_gguf(parse_gguf_header(data))
        except _Truncated:
            if len(data) < count or count >= GGUF_MAX_HEADER_BYTES:
                raise DownloadError(f"{path}: the GGUF header is cut short or larger than 64 MiB") from None
            count *= 4
        except (ValueError, struct.error, UnicodeDecodeError) as exc:
            raise DownloadError(f"{path}: unreadable GGUF header: {exc}") from None


def safetensors_header(read: ReadPrefix, path: str) -> dict[str, Any]:
    """The JSON header of a safetensors file: an 8-byte length, then the JSON."""
    data = read(path, 256 * 1024)
    if len(data) < 8:
        raise DownloadError(f"{path}: shorter than a safetensors header length")
    length = struct.unpack("<Q", data[:8])[0]
    if length > SAFETENSORS_MAX_HEADER_BYTES:
        raise DownloadError(f"{path}: a safetensors header of {length} bytes is beyond the format's limit")
    if len(data) < 8 + length:
        data = read(path, 8 + length)
    try:
        header = json.loads(data[8 : 8 + length])
    except ValueError:
        raise DownloadError(f"{path}: the safetensors header is not JSON") from None
    if not isinstance(header, dict):
        raise DownloadError(f"{path}: the safetensors header is not a JSON object")
    return header


def describe(paths: list[str], read: ReadPrefix) -> dict[str, Any]:
    """What a model is, from the headers of its files: ``config.json``, the first
    GGUF weights file (not a projector), every safetensors shard. Never raises: what
    could not be read is said in ``unread``."""
    meta: dict[str, Any] = {}
    try:
        if "config.json" in paths:
            try:
                config = json.loads(read("config.json", CONFIG_MAX_BYTES))
            except ValueError:
                raise DownloadError("config.json is not JSON") from None
            if isinstance(config, dict):
                meta.update(summarize_config(config))
        weights = sorted(
            (p for p in paths if p.lower().endswith(".gguf")),
            key=lambda p: (posixpath.basename(p).lower().startswith(("mmproj", "projector")), p),
        )
        if weights:
            meta.update(gguf_summary(read, weights[0]))
        shards = sorted(p for p in paths if p.endswith(".safetensors"))[:MAX_SHARDS]
        if shards and not weights:
            # A big model has dozens of shards: their headers are asked for side by side.
            with ThreadPoolExecutor(max_workers=SHARD_READERS) as pool:
                headers = list(pool.map(lambda p: safetensors_header(read, p), shards))
            meta.update(summarize_safetensors(headers))
    except (DownloadError, OSError) as exc:
        meta["unread"] = str(exc)
    return meta


def remote_reader(urls: Mapping[str, str], *, headers: Mapping[str, str], trusted: bool) -> ReadPrefix:
    def read(path: str, count: int) -> bytes:
        return read_prefix(urls[path], count, headers=headers, trusted=trusted)

    return read


def local_reader(folder: Path) -> ReadPrefix:
    def read(path: str, count: int) -> bytes:
        with open(inside(folder, path), "rb") as f:
            return f.read(count)

    return read



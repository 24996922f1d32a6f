"""Real model files for the header readers: GGUF written with the gguf package (tiny
tensors), safetensors laid out by its spec."""

from __future__ import annotations

import json
import struct
import tempfile
from pathlib import Path

import gguf
import numpy as np

from tests.helpers import blob


def tiny_gguf(
    *,
    arch: str = "llama",
    layers: int = 4,
    heads: int = 8,
    kv_heads: int = 2,
    embedding: int = 64,
    context: int = 4096,
    file_type: gguf.LlamaFileType = gguf.LlamaFileType.MOSTLY_Q4_K_M,
    chat_template: str | None = "{% for m in messages %}{{ m.content }}{% endfor %}",
    vocabulary: int = 32,
) -> bytes:
    """A GGUF file as llama.cpp's converter writes one: metadata, a vocabulary, tensors."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.gguf"
        writer = gguf.GGUFWriter(path, arch)
        writer.add_name("Tiny Test Model")
        writer.add_context_length(context)
        writer.add_block_count(layers)
        writer.add_head_count(heads)
        writer.add_head_count_kv(kv_heads)
        writer.add_embedding_length(embedding)
        writer.add_feed_forward_length(embedding * 2)
        writer.add_file_type(file_type)
        writer.add_tokenizer_model("llama")
        writer.add_token_list([f"token-{i:06d}" for i in range(vocabulary)])
        writer.add_token_scores([0.0] * vocabulary)
        if chat_template is not None:
            writer.add_chat_template(chat_template)
        writer.add_tensor("token_embd.weight", np.zeros((vocabulary, embedding), dtype=np.float32))
        for layer in range(layers):
            writer.add_tensor(f"blk.{layer}.attn_q.weight", np.zeros((embedding, embedding), dtype=np.float16))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        return path.read_bytes()


def tiny_gguf_parameters(*, layers: int = 4, embedding: int = 64, vocabulary: int = 32) -> int:
    return vocabulary * embedding + layers * embedding * embedding


def safetensors(tensors: dict[str, tuple[str, list[int]]], *, pad: int = 0) -> bytes:
    """A real safetensors file: the 8-byte header length, the JSON header, zeroed data."""
    sizes = {"F16": 2, "BF16": 2, "F32": 4}
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, (dtype, shape) in tensors.items():
        count = sizes[dtype]
        for d in shape:
            count *= d
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + count]}
        offset += count
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + bytes(offset) + blob(pad, seed=5)

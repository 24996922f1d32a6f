"""Will it fit: a hive's GPUs, and the memory a model needs at a context length.

The estimate is the one admins make by hand: the weights as they are on disk, the
KV cache (keys and values, every layer, every position of the context, each KV
head's vector, in f16), and a fixed allowance for the runtime's buffers.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Mapping
from typing import Any

from django.conf import settings

#: CUDA context, compute buffers, activations: what llama.cpp and vLLM take beyond
#: weights and cache for a small batch.
OVERHEAD_BYTES = 512 * 1024 * 1024
#: f16, the KV cache type llama.cpp, vLLM and Ollama default to.
KV_BYTES_PER_ELEMENT = 2
#: Within this share of the VRAM the model fits only just: a bigger batch or context will not.
TIGHT_SHARE = 0.10
DEFAULT_CONTEXT = 8192

FITS, TIGHT, TOO_BIG, UNKNOWN = "fits", "tight", "does not fit", "unknown"
_GPU_SPEC = re.compile(r"^(?:(\d+)\s*[x×]\s*)?(\d+(?:\.\d+)?)\s*([GM])(?:i?B)?$", re.IGNORECASE)


def parse_gpu_spec(text: str) -> list[dict[str, Any]]:
    """``"2x24G"`` or ``"1x80G,1x24G"`` as GPU rows; ValueError on anything else."""
    gpus: list[dict[str, Any]] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        match = _GPU_SPEC.match(part)
        if not match:
            raise ValueError(f"RBEE_HIVE_GPUS: {part!r} is not like 2x24G")
        count = int(match[1] or 1)
        mib = float(match[2]) * (1024 if match[3].upper() == "G" else 1)
        gpus += [{"name": "GPU (RBEE_HIVE_GPUS)", "memory_mib": int(mib)} for _ in range(count)]
    return gpus


def parse_nvidia_smi(output: str) -> list[dict[str, Any]]:
    """Rows of ``nvidia-smi --query-gpu=name,memory.total --format=csv,noheader,nounits``."""
    gpus = []
    for line in output.splitlines():
        name, _, memory = line.rpartition(",")
        if name.strip() and memory.strip().isdigit():
            gpus.append({"name": name.strip(), "memory_mib": int(memory.strip())})
    return gpus


def detect_gpus() -> list[dict[str, Any]]:
    """This machine's GPUs: nvidia-smi when there is one, else RBEE_HIVE_GPUS, else none."""
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            done = subprocess.run(
                [smi, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
                capture_output=True, text=True, timeout=10, check=True,
            )  # fmt: skip
        except (OSError, subprocess.SubprocessError):
            pass
        else:
            found = parse_nvidia_smi(done.stdout)
            if found:
                return found
    return parse_gpu_spec(settings.RBEE_HIVE_GPUS) if settings.RBEE_HIVE_GPUS else []


def kv_cache_bytes(meta: Mapping[str, Any], context: int) -> int | None:
    """2 (keys and values) × layers × context × KV heads × head size × bytes per element."""
    layers, kv_heads, head_dim = meta.get("layers"), meta.get("kv_heads"), meta.get("head_dim")
    if not (layers and kv_heads and head_dim):
        return None
    return 2 * int(layers) * context * int(kv_heads) * int(head_dim) * KV_BYTES_PER_ELEMENT


def estimate(weights_bytes: int, meta: Mapping[str, Any], context: int, vram_bytes: int) -> dict[str, Any]:
    """Memory needed for these weights at ``context``, and the verdict against ``vram_bytes``."""
    kv = kv_cache_bytes(meta, context)
    needed = weights_bytes + (kv or 0) + OVERHEAD_BYTES
    return {
        "weights": weights_bytes,
        "kv_cache": kv,
        "overhead": OVERHEAD_BYTES,
        "needed": needed,
        "vram": vram_bytes,
        "verdict": verdict(needed, vram_bytes) if kv is not None else UNKNOWN,
    }


def verdict(needed: int, vram_bytes: int) -> str:
    if vram_bytes <= 0:
        return UNKNOWN
    if needed <= vram_bytes * (1 - TIGHT_SHARE):
        return FITS
    if needed <= vram_bytes:
        return TIGHT
    return TOO_BIG


def context_for(meta: Mapping[str, Any], asked: object) -> int:
    """The context length to estimate for: the admin's, else the model's up to DEFAULT_CONTEXT."""
    try:
        value = int(str(asked))
    except ValueError:
        value = 0
    if value > 0:
        return min(value, 10_000_000)
    model_max = meta.get("context_length")
    return min(int(model_max), DEFAULT_CONTEXT) if isinstance(model_max, int) and model_max > 0 else DEFAULT_CONTEXT


def fit_table(plan_extra: Mapping[str, Any], plan_total: int, context: int, vram_bytes: int) -> list[dict[str, Any]]:
    """One row per quant of a GGUF repo (its size from the listing), else one for the plan."""
    meta = plan_extra.get("metadata") or {}
    sizes: Mapping[str, int] = plan_extra.get("quant_sizes") or {}
    if sizes:
        rows = [{"quant": q, **estimate(size, meta, context, vram_bytes)} for q, size in sizes.items()]
    else:
        rows = [{"quant": meta.get("quant") or "", **estimate(plan_total, meta, context, vram_bytes)}]
    chosen = plan_extra.get("quant")
    for row in rows:
        row["chosen"] = bool(chosen) and row["quant"] == chosen
    return rows


def hive_fit(plan_extra: Mapping[str, Any], plan_total: int, hive: Any, asked_context: object) -> dict[str, Any]:
    """The preview's fit section for one hive: its GPUs (as reported, or looked up when
    the hive is this machine and has not reported), the context, a row per quant."""
    gpus = list(hive.gpus or [])
    if not gpus and hive.is_here():
        gpus = detect_gpus()
    vram = sum(int(g.get("memory_mib", 0)) for g in gpus) * 1024 * 1024
    meta = plan_extra.get("metadata") or {}
    context = context_for(meta, asked_context)
    return {
        "gpus": gpus,
        "vram": vram,
        "context": context,
        "rows": fit_table(plan_extra, plan_total, context, vram),
    }

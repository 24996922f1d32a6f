"""Knowing the model before downloading it: GGUF and safetensors headers read by
Range, config.json, and the memory estimate per quant against a hive's GPUs."""

from __future__ import annotations

from pathlib import Path

import gguf
import pytest

from catalog.models import Hive
from provisioner import fit, metadata
from provisioner.models import DownloadJob
from tests.helpers import wait_finished
from tests.model_files import safetensors, tiny_gguf, tiny_gguf_parameters
from tests.servers.faults import FaultServer


def test_it_reads_a_real_gguf_header_as_the_gguf_package_does(tmp_path):
    data = tiny_gguf(layers=3, heads=8, kv_heads=2, embedding=64, context=4096)
    path = tmp_path / "model.gguf"
    path.write_bytes(data)
    reader = gguf.GGUFReader(path)

    summary = metadata.summarize_gguf(metadata.parse_gguf_header(data))

    assert summary == {
        "format": "gguf",
        "architecture": "llama",
        "name": "Tiny Test Model",
        "parameters": tiny_gguf_parameters(layers=3, embedding=64),
        "context_length": 4096,
        "layers": 3,
        "heads": 8,
        "kv_heads": 2,
        "embedding": 64,
        "head_dim": 8,
        "quant": "Q4_K_M",
        "chat_template": True,
    }
    assert summary["parameters"] == sum(int(t.n_elements) for t in reader.tensors)
    assert int(reader.fields["llama.block_count"].parts[-1][0]) == 3


def test_it_names_every_file_type_as_llama_cpp_does():
    for file_type, name in metadata.FILE_TYPES.items():
        assert gguf.LlamaFileType(file_type).name.removeprefix("MOSTLY_").replace("ALL_", "") == name


def test_it_says_when_a_gguf_has_no_chat_template():
    summary = metadata.summarize_gguf(metadata.parse_gguf_header(tiny_gguf(chat_template=None)))
    assert summary["chat_template"] is False


def test_it_refuses_what_is_not_gguf():
    assert "unread" in metadata.describe(["x.gguf"], lambda path, count: b"PK\x03\x04" + bytes(64))


@pytest.mark.parametrize("honours_range", [True, False])
def test_it_reads_a_header_longer_than_the_first_look_by_range(honours_range):
    data = tiny_gguf(vocabulary=60_000, embedding=8, layers=2, heads=2, kv_heads=1)
    assert len(data) > metadata.GGUF_FIRST_BYTES
    with FaultServer() as server:
        server.add_file("model.gguf", data)
        if not honours_range:
            server.set_fault("model.gguf", ignore_range=True)
        read = metadata.remote_reader({"model.gguf": server.url_for("model.gguf")}, headers={}, trusted=True)

        summary = metadata.describe(["model.gguf"], read)

        ranges = [r.header("Range") for r in server.requests]
    assert summary["layers"] == 2 and summary["parameters"] == tiny_gguf_parameters(
        layers=2, embedding=8, vocabulary=60_000
    )
    assert ranges == ["bytes=0-1048575", "bytes=0-4194303"]


def test_it_counts_parameters_over_every_safetensors_shard():
    shards = {
        "model-00001-of-00002.safetensors": safetensors({"a": ("BF16", [16, 8]), "b": ("BF16", [8])}),
        "model-00002-of-00002.safetensors": safetensors({"c": ("F32", [4, 4])}),
    }
    summary = metadata.describe(sorted(shards), lambda path, count: shards[path][:count])
    assert summary == {"format": "safetensors", "parameters": 16 * 8 + 8 + 16, "dtypes": {"BF16": 136, "F32": 16}}


def test_it_reads_the_architecture_from_config_json():
    config = b'{"model_type": "llama", "num_hidden_layers": 32, "num_attention_heads": 32, "hidden_size": 4096}'
    summary = metadata.describe(["config.json"], lambda path, count: config[:count])
    assert summary["layers"] == 32 and summary["kv_heads"] == 32 and summary["head_dim"] == 128


# -- fit -----------------------------------------------------------------------------

# Llama 3.1 8B as its GGUF header says it: 32 layers, 32 heads, 8 KV heads, 4096 wide.
LLAMA_31_8B = {"layers": 32, "heads": 32, "kv_heads": 8, "embedding": 4096, "head_dim": 128, "context_length": 131072}
Q4_K_M_BYTES = 4_920_739_232


def test_it_estimates_the_kv_cache_by_hand():
    # 2 (K and V) × 32 layers × 8192 positions × 8 KV heads × 128 × 2 bytes (f16) = 1 GiB exactly.
    assert fit.kv_cache_bytes(LLAMA_31_8B, 8192) == 2 * 32 * 8192 * 8 * 128 * 2 == 1024**3
    assert fit.kv_cache_bytes(LLAMA_31_8B, 131072) == 16 * 1024**3


@pytest.mark.parametrize(
    ("gpus", "verdict"),
    [("8G", "fits"), ("2x4G", "fits"), ("6.5G", "tight"), ("6G", "does not fit"), ("", "unknown")],
)
def test_it_marks_each_quant_fits_tight_or_not(gpus, verdict):
    vram = sum(g["memory_mib"] for g in fit.parse_gpu_spec(gpus)) * 1024 * 1024
    row = fit.estimate(Q4_K_M_BYTES, LLAMA_31_8B, 8192, vram)
    # 4 920 739 232 + 1 073 741 824 (KV) + 536 870 912 (runtime) = 6 531 351 968 bytes.
    assert row["needed"] == 6_531_351_968
    assert row["verdict"] == verdict


def test_it_reads_nvidia_smi_and_the_gpu_setting():
    assert fit.parse_nvidia_smi("NVIDIA GeForce RTX 4090, 24564\nNVIDIA L4, 23034\n") == [
        {"name": "NVIDIA GeForce RTX 4090", "memory_mib": 24564},
        {"name": "NVIDIA L4", "memory_mib": 23034},
    ]
    assert [g["memory_mib"] for g in fit.parse_gpu_spec("2x24G,1x512M")] == [24576, 24576, 512]
    with pytest.raises(ValueError):
        fit.parse_gpu_spec("lots")


def test_the_heartbeat_reports_the_hives_gpus(hive, settings):
    from provisioner.worker import HiveHeartbeat

    settings.RBEE_HIVE_GPUS = "2x24G"
    HiveHeartbeat(hive).beat()
    hive.refresh_from_db()
    assert hive.gpus == [{"name": "GPU (RBEE_HIVE_GPUS)", "memory_mib": 24576}] * 2
    assert hive.vram_bytes() == 48 * 1024**3


# -- the plan preview ------------------------------------------------------------------


@pytest.fixture
def gguf_repo(hub):
    arch = {"layers": 4, "heads": 8, "kv_heads": 2, "embedding": 64, "context": 32768}
    return hub.add_repo(
        "acme/tiny-GGUF",
        {
            "tiny-Q4_K_M.gguf": tiny_gguf(**arch),
            "tiny-Q8_0.gguf": tiny_gguf(**arch, file_type=gguf.LlamaFileType.MOSTLY_Q8_0) + bytes(3 * 1024 * 1024),
            "README.md": b"# tiny",
        },
    )


def test_it_previews_what_the_model_is_and_whether_each_quant_fits(hub, gguf_repo, hive, alice_client):
    hive.gpus = [{"name": "Tiny GPU", "memory_mib": 570}]
    hive.save(update_fields=["gpus"])

    page = alice_client.post("/jobs/plan/", {"model": "acme/tiny-GGUF", "hive": hive.name, "context": "1024"})

    html = page.content.decode()
    assert page.status_code == 200
    assert "<code>llama</code>" in html and "Tiny Test Model" in html
    assert 'name="context"' in html and 'value="1024"' in html
    assert "Tiny GPU" in html
    # KV: 2 × 4 layers × 1024 × 2 KV heads × 8 × 2 bytes = 256 KiB; the runtime's 512 MiB;
    # 90 % of 570 MiB is 513 MiB: the Q4_K_M file (a few KiB) fits, Q8_0 (3 MiB more) is tight.
    rows = {q: v for q, v in _fit_rows(html)}
    assert rows == {"Q4_K_M": "fits", "Q8_0": "tight"}
    # Only the header of the chosen quant was read, by Range.
    gets = hub.gets("acme/tiny-GGUF", "tiny-Q4_K_M.gguf")
    assert gets and all(r.header("Range") == f"bytes=0-{metadata.GGUF_FIRST_BYTES - 1}" for r in gets)
    assert not hub.gets("acme/tiny-GGUF", "tiny-Q8_0.gguf")


def test_it_keeps_the_previewed_metadata_on_the_entry(hub, gguf_repo, hive, alice_client):
    alice_client.post("/jobs/plan/", {"model": "acme/tiny-GGUF", "hive": hive.name})
    alice_client.post("/jobs/", {"model": "acme/tiny-GGUF", "hive": hive.name})
    job = wait_finished(DownloadJob.objects.get())
    assert job.state == DownloadJob.SUCCEEDED, job.error
    assert job.plan["extra"]["metadata"]["quant"] == "Q4_K_M"
    assert job.entry.metadata == job.plan["extra"]["metadata"]
    assert job.entry.metadata["context_length"] == 32768
    data = alice_client.get(f"/api/models/{job.entry.pk}/").json()
    assert data["metadata"]["kv_heads"] == 2
    assert data["engines"] == [{"engine": "llama.cpp", "line": f"llama-server -m {Path(job.entry.path) / 'tiny-Q4_K_M.gguf'}"}]


def test_it_says_when_the_hive_reports_no_gpus(hub, gguf_repo, hive, alice_client, settings):
    settings.RBEE_HIVE_GPUS = ""
    Hive.objects.filter(pk=hive.pk).update(gpus=[])
    html = alice_client.post("/jobs/plan/", {"model": "acme/tiny-GGUF", "hive": hive.name}).content.decode()
    assert "reports no GPUs" in html
    assert dict(_fit_rows(html)) == {"Q4_K_M": "unknown", "Q8_0": "unknown"}


def _fit_rows(html: str) -> list[tuple[str, str]]:
    import re

    table = html.split('class="data compact fit"', 1)[1].split("</table>", 1)[0]
    return re.findall(r"<code>([A-Z0-9_]+)</code>.*?<span class=\"badge [a-z]+\">([a-z ]+)</span>", table, re.S)

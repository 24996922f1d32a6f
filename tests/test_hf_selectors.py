"""Choosing what to download from a Hugging Face repo (quant tags, globs, revisions),
and the plan preview the download form shows while the admin types."""

from __future__ import annotations

from pathlib import Path

import pytest

from catalog.models import ModelEntry
from provisioner.models import DownloadJob
from provisioner.references import parse_reference
from provisioner.vendors.huggingface import HuggingFaceVendor, default_quant
from rbee.formatting import human_bytes
from tests.helpers import blob, download, files_below

Q4 = blob(300_000, seed=41)
Q5 = blob(350_000, seed=42)
Q8 = blob(500_000, seed=43)


@pytest.fixture
def gguf_repo(hub) -> str:
    return hub.add_repo(
        "acme/tiny-GGUF",
        {
            "README.md": b"# tiny",
            "tiny-Q4_K_M.gguf": Q4,
            "tiny-Q5_K_M.gguf": Q5,
            "tiny-Q8_0.gguf": Q8,
        },
        tags=["v1"],
    )


def test_it_takes_only_the_gguf_of_the_quant(hub, gguf_repo, hive):
    job = download("acme/tiny-GGUF:Q4_K_M", hive)

    assert job.state == DownloadJob.SUCCEEDED, job.error
    assert job.entry.reference == "hf:acme/tiny-GGUF:Q4_K_M"
    assert files_below(job.entry.path) == {"tiny-Q4_K_M.gguf"}
    assert (Path(job.entry.path) / "tiny-Q4_K_M.gguf").read_bytes() == Q4


def test_it_takes_every_part_of_a_split_quant(hub, hive):
    parts = {f"big-Q4_K_M-0000{i}-of-00003.gguf": blob(1000 + i, seed=i) for i in (1, 2, 3)}
    hub.add_repo(
        "acme/big-GGUF",
        {
            **parts,
            "big-Q5_K_M-00001-of-00002.gguf": blob(100, seed=7),
            "big-Q5_K_M-00002-of-00002.gguf": blob(100, seed=8),
            "big-Q4_K_S.gguf": blob(100, seed=9),
        },
    )

    job = download("acme/big-GGUF:Q4_K_M", hive)

    assert job.state == DownloadJob.SUCCEEDED, job.error
    assert files_below(job.entry.path) == set(parts)
    assert job.entry.size_bytes == sum(len(b) for b in parts.values())


def test_it_takes_the_files_in_a_folder_named_after_the_quant(hub, hive):
    hub.add_repo(
        "acme/folders-GGUF",
        {
            "Q4_K_M/model-00001-of-00002.gguf": blob(1000, seed=1),
            "Q4_K_M/model-00002-of-00002.gguf": blob(1000, seed=2),
            "Q5_K_M/model-00001-of-00001.gguf": blob(1000, seed=3),
            "README.md": b"# folders",
        },
    )

    job = download("acme/folders-GGUF:Q4_K_M", hive)

    assert job.state == DownloadJob.SUCCEEDED, job.error
    assert files_below(job.entry.path) == {"Q4_K_M/model-00001-of-00002.gguf", "Q4_K_M/model-00002-of-00002.gguf"}


def test_it_takes_a_glob_plus_what_a_loader_needs(hub, hive):
    hub.add_repo(
        "acme/tiny-llama",
        {
            "model-00001-of-00002.safetensors": blob(2000, seed=1),
            "model-00002-of-00002.safetensors": blob(2000, seed=2),
            "model.safetensors.index.json": b'{"weight_map": {}}',
            "config.json": b"{}",
            "generation_config.json": b"{}",
            "tokenizer.json": b"{}",
            "tokenizer_config.json": b"{}",
            "special_tokens_map.json": b"{}",
            "tokenizer.model": b"sentencepiece",
            "pytorch_model.bin": blob(4000, seed=3),
            "original/consolidated.00.pth": blob(4000, seed=4),
            "original/params.json": b"{}",
            "README.md": b"# tiny",
        },
    )

    job = download("acme/tiny-llama:*.safetensors", hive)

    assert job.state == DownloadJob.SUCCEEDED, job.error
    assert files_below(job.entry.path) == {
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "model.safetensors.index.json",
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "tokenizer.model",
    }


def test_it_lists_the_available_quants_when_the_quant_is_unknown(hub, gguf_repo, hive):
    job = download("acme/tiny-GGUF:Q2_K", hive)

    assert job.state == DownloadJob.FAILED
    assert job.error_kind == "selector_matched_nothing"
    assert "Q2_K" in job.error
    assert "quants available: Q4_K_M, Q5_K_M, Q8_0" in job.error
    assert not ModelEntry.objects.exists()


def test_it_pins_a_tag_and_records_its_commit(hub, gguf_repo, hive):
    newer = hub.add_commit("acme/tiny-GGUF", {"tiny-Q4_K_M.gguf": Q5})

    job = download("acme/tiny-GGUF@v1:Q4_K_M", hive)

    assert job.state == DownloadJob.SUCCEEDED, job.error
    assert job.entry.revision == gguf_repo != newer
    assert (Path(job.entry.path) / "tiny-Q4_K_M.gguf").read_bytes() == Q4


def test_it_pins_a_commit_sha(hub, gguf_repo, hive):
    hub.add_commit("acme/tiny-GGUF", {"tiny-Q4_K_M.gguf": Q5})

    job = download(f"acme/tiny-GGUF@{gguf_repo}:Q4_K_M", hive)

    assert job.state == DownloadJob.SUCCEEDED, job.error
    assert job.entry.revision == gguf_repo
    assert job.entry.reference == f"hf:acme/tiny-GGUF@{gguf_repo}:Q4_K_M"
    assert (Path(job.entry.path) / "tiny-Q4_K_M.gguf").read_bytes() == Q4


# -- a GGUF repo without a selector ----------------------------------------------------


def test_it_takes_one_quant_of_a_gguf_repo_when_none_is_named(hub, gguf_repo, hive):
    job = download("acme/tiny-GGUF", hive)

    assert job.state == DownloadJob.SUCCEEDED, job.error
    assert job.entry.reference == "hf:acme/tiny-GGUF"
    assert files_below(job.entry.path) == {"tiny-Q4_K_M.gguf"}
    assert job.plan["extra"]["quant"] == "Q4_K_M"
    assert job.plan["extra"]["quants"] == ["Q4_K_M", "Q5_K_M", "Q8_0"]


def test_the_plan_says_which_quant_it_chose_and_which_exist(hub, hive):
    hub.add_repo("acme/no-q4-GGUF", {"m-Q3_K_M.gguf": blob(10), "m-Q6_K.gguf": blob(20), "m-F16.gguf": blob(40)})

    plan = HuggingFaceVendor().plan(parse_reference("acme/no-q4-GGUF"))

    assert [f.path for f in plan.files] == ["m-Q6_K.gguf"]  # more bits before fewer
    assert plan.extra["quant"] == "Q6_K"
    assert plan.extra["quants"] == plan.extra["gguf_quants"] == ["F16", "Q3_K_M", "Q6_K"]


def test_a_named_quant_is_the_plans_quant(hub, gguf_repo, hive):
    plan = HuggingFaceVendor().plan(parse_reference("acme/tiny-GGUF:q8_0"))

    assert [f.path for f in plan.files] == ["tiny-Q8_0.gguf"]
    assert plan.extra["quant"] == "Q8_0"


def test_a_split_default_quant_comes_whole(hub, hive):
    parts = {f"big-Q4_K_M-0000{i}-of-00002.gguf": blob(100 + i, seed=i) for i in (1, 2)}
    hub.add_repo("acme/split-GGUF", {**parts, "big-Q8_0.gguf": blob(500), "Q5_K_M/big.gguf": blob(300)})

    plan = HuggingFaceVendor().plan(parse_reference("acme/split-GGUF"))

    assert sorted(f.path for f in plan.files) == sorted(parts)
    assert plan.extra["quants"] == ["Q4_K_M", "Q5_K_M", "Q8_0"]


@pytest.mark.parametrize(
    ("quants", "chosen"),
    [
        (["Q2_K", "Q4_K_M", "Q8_0"], "Q4_K_M"),
        (["Q4_K_S", "Q5_K_M"], "Q4_K_S"),
        (["Q3_K_M", "Q5_K_M", "Q8_0"], "Q5_K_M"),
        (["Q8_0", "F16"], "Q8_0"),
        (["BF16", "F32"], "BF16"),
        (["Q4_K_XL", "Q2_K"], "Q4_K_XL"),  # not in the list: nearest to 4 bits
        (["Q3_K_XL", "Q6_K_XL"], "Q6_K_XL"),
        ([], None),
    ],
)
def test_it_prefers_four_bit_then_more_bits_then_fewer(quants, chosen):
    assert default_quant(quants) == chosen


def test_a_repo_without_gguf_still_downloads_everything(hub, hive):
    hub.add_repo("acme/plain", {"config.json": b"{}", "model.safetensors": blob(100)})

    plan = HuggingFaceVendor().plan(parse_reference("acme/plain"))

    assert sorted(f.path for f in plan.files) == ["config.json", "model.safetensors"]
    assert plan.extra["quant"] is None and plan.extra["quants"] == []


# -- a file name as the selector -----------------------------------------------------------


def test_a_file_name_selector_keeps_its_case_and_takes_that_file(hub, hive):
    hub.add_repo(
        "acme/Mixed",
        {
            "Model.safetensors": blob(1000, seed=1),
            "model-other.safetensors": blob(1000, seed=2),
            "config.json": b"{}",
            "tiny-Q4_K_M.gguf": Q4,
        },
    )

    job = download("acme/Mixed:Model.safetensors", hive)

    assert job.state == DownloadJob.SUCCEEDED, job.error
    assert job.entry.reference == "hf:acme/Mixed:Model.safetensors"
    assert files_below(job.entry.path) == {"Model.safetensors", "config.json"}  # and what a loader needs


def test_a_file_name_selector_takes_one_gguf_file(hub, gguf_repo, hive):
    job = download("acme/tiny-GGUF:tiny-Q5_K_M.gguf", hive)

    assert job.state == DownloadJob.SUCCEEDED, job.error
    assert files_below(job.entry.path) == {"tiny-Q5_K_M.gguf"}


def test_a_file_name_that_is_not_there_says_so(hub, gguf_repo, hive):
    job = download("acme/tiny-GGUF:tiny-Q5_K_M.GGUF", hive)

    assert job.state == DownloadJob.FAILED
    assert job.error_kind == "selector_matched_nothing"
    assert "tiny-Q5_K_M.GGUF" in job.error


# -- the plan preview -------------------------------------------------------------------


def preview(client, model: str) -> str:
    response = client.post("/jobs/plan/", {"model": model})
    assert response.status_code == 200
    return response.content.decode()


def test_it_requires_login_for_the_preview(client, db):
    response = client.post("/jobs/plan/", {"model": "acme/tiny-GGUF"})
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")


def test_it_rejects_get_of_the_preview(alice_client):
    assert alice_client.get("/jobs/plan/", {"model": "acme/tiny-GGUF"}).status_code == 405


def test_it_previews_the_files_sizes_and_total_of_a_selector(hub, gguf_repo, alice_client, hive):
    body = preview(alice_client, "acme/tiny-GGUF:Q4_K_M")

    assert "huggingface" in body
    assert "tiny-Q4_K_M.gguf" in body
    assert "tiny-Q5_K_M.gguf" not in body
    assert human_bytes(len(Q4)) in body
    assert "1 file<" in body
    assert gguf_repo[:12] in body
    assert "Fits:" in body
    assert "pick one" not in body  # a quant was chosen already
    assert not DownloadJob.objects.exists()  # a preview never queues anything


def test_it_previews_the_quant_choices_of_a_gguf_repo(hub, gguf_repo, alice_client, hive):
    body = preview(alice_client, "acme/tiny-GGUF")

    assert "1 file<" in body  # the default quant, not every quant in the repo
    assert "tiny-Q4_K_M.gguf" in body and "tiny-Q8_0.gguf" not in body
    assert human_bytes(len(Q4)) in body
    for quant in ("Q4_K_M", "Q5_K_M", "Q8_0"):
        assert f'href="/jobs/new/?model=acme%2Ftiny-GGUF%3A{quant}"' in body


def test_it_previews_that_a_download_does_not_fit(hub, gguf_repo, alice_client, hive, settings):
    settings.RBEE_DISK_RESERVE = 1024**6  # an exabyte kept free: nothing fits

    body = preview(alice_client, "acme/tiny-GGUF:Q8_0")

    assert "Does not fit" in body
    assert human_bytes(len(Q8)) in body


def test_it_previews_why_a_plan_is_impossible(hub, gguf_repo, alice_client, hive):
    body = preview(alice_client, "acme/tiny-GGUF:Q2_K")
    assert "quants available: Q4_K_M, Q5_K_M, Q8_0" in body

    body = preview(alice_client, "acme/no-such-repo")
    assert "not found" in body


def test_it_previews_other_vendors_too(alice_client, hive, settings, tmp_path):
    settings.RBEE_IMPORT_ROOTS = [tmp_path / "imports"]
    (tmp_path / "imports" / "m").mkdir(parents=True)
    (tmp_path / "imports" / "m" / "model.gguf").write_bytes(Q4)

    body = preview(alice_client, f"file:{tmp_path}/imports/m")
    assert "local" in body and "model.gguf" in body and human_bytes(len(Q4)) in body

    body = preview(alice_client, f"file:{tmp_path}/elsewhere")
    assert "outside the import roots" in body


def test_it_previews_nothing_for_an_empty_reference(alice_client):
    assert "Type a reference" in preview(alice_client, "")

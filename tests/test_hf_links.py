"""A Hugging Face page pasted from the browser is read as the model it shows, not fetched as a web page."""

from __future__ import annotations

import pytest

from provisioner.models import DownloadJob
from provisioner.references import HuggingFaceRef, UnsupportedReference, parse_reference
from provisioner.vendors import vendor_for
from tests.helpers import files_below, wait_finished


@pytest.mark.parametrize(
    ("link", "expected"),
    [
        ("https://huggingface.co/meta-llama/Llama-3.2-1B", "hf:meta-llama/Llama-3.2-1B"),
        ("https://huggingface.co/meta-llama/Llama-3.2-1B/", "hf:meta-llama/Llama-3.2-1B"),
        ("https://www.huggingface.co/org/name?library=transformers", "hf:org/name"),
        ("https://hf.co/org/name", "hf:org/name"),
        ("http://huggingface.co/org/name", "hf:org/name"),
        ("https://huggingface.co/org/name/tree/main", "hf:org/name"),
        ("https://huggingface.co/org/name/tree/v1.0", "hf:org/name@v1.0"),
        ("https://huggingface.co/org/name/tree/refs%2Fpr%2F3", "hf:org/name@refs/pr/3"),
        ("https://huggingface.co/org/name-GGUF/tree/main/Q4_K_M", "hf:org/name-GGUF:Q4_K_M/*"),
        ("https://huggingface.co/org/name/blob/main/model.safetensors", "hf:org/name:model.safetensors"),
        ("https://huggingface.co/org/name/blob/abc123/sub/Model-Q4_K_M.gguf", "hf:org/name@abc123:sub/Model-Q4_K_M.gguf"),
        (
            "https://huggingface.co/org/name-GGUF/resolve/main/name-Q8_0.gguf?download=true",
            "hf:org/name-GGUF:name-Q8_0.gguf",
        ),
    ],
)
def test_it_reads_a_hub_link_as_a_reference(link, expected):
    ref = parse_reference(link)

    assert isinstance(ref, HuggingFaceRef)
    assert ref.canonical == expected
    assert vendor_for(ref).name == "huggingface"


@pytest.mark.parametrize(
    ("link", "reason"),
    [
        ("https://huggingface.co/datasets/org/name", "dataset"),
        ("https://huggingface.co/spaces/org/app", "space"),
        ("https://huggingface.co/gpt2", "must name a model repo"),
        ("https://huggingface.co/", "must name a model repo"),
        ("https://huggingface.co/org/name/discussions/4", "tree, blob or resolve"),
        ("https://huggingface.co/org/name/blob/main", "tree, blob or resolve"),
        ("https://huggingface.co/org/name/blob/main/%2E%2E/x", "'.' or '..'"),
    ],
)
def test_it_refuses_a_hub_link_that_is_not_a_model(link, reason):
    with pytest.raises(UnsupportedReference, match=reason) as refused:
        parse_reference(link)
    assert link in str(refused.value)


def test_the_form_takes_a_pasted_hub_link(hub, alice_client, hive):
    hub.add_repo("acme/linked-GGUF", {"linked-Q4_K_M.gguf": b"q4" * 100, "linked-Q8_0.gguf": b"q8" * 200})

    response = alice_client.post("/jobs/", {"model": "https://huggingface.co/acme/linked-GGUF/blob/main/linked-Q8_0.gguf"})

    assert response.status_code == 303
    job = wait_finished(DownloadJob.objects.get())
    assert job.reference == "hf:acme/linked-GGUF:linked-Q8_0.gguf"
    assert job.state == DownloadJob.SUCCEEDED, job.error
    assert files_below(job.entry.path) == {"linked-Q8_0.gguf"}

from __future__ import annotations

import pytest

from provisioner.references import (
    FileRef,
    HuggingFaceRef,
    OllamaRef,
    UnsupportedReference,
    UrlRef,
    parse_reference,
)

SHA = "a" * 64


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("meta-llama/Llama-3.2-1B", HuggingFaceRef("meta-llama/Llama-3.2-1B")),
        ("hf:meta-llama/Llama-3.2-1B", HuggingFaceRef("meta-llama/Llama-3.2-1B")),
        ("  org/name@v1.0 ", HuggingFaceRef("org/name", revision="v1.0")),
        ("org/name@refs/pr/1", HuggingFaceRef("org/name", revision="refs/pr/1")),
        ("org/name-GGUF:Q4_K_M", HuggingFaceRef("org/name-GGUF", selector="Q4_K_M")),
        ("org/name@main:*.safetensors", HuggingFaceRef("org/name", revision="main", selector="*.safetensors")),
        ("ollama:llama3.2", OllamaRef(None, "library", "llama3.2", "latest")),
        ("ollama:llama3.2:1b", OllamaRef(None, "library", "llama3.2", "1b")),
        ("ollama:me/mine:q4", OllamaRef(None, "me", "mine", "q4")),
        ("ollama:registry.example.com/me/mine", OllamaRef("registry.example.com", "me", "mine", "latest")),
        ("ollama:localhost:5000/library/tiny:v1", OllamaRef("localhost:5000", "library", "tiny", "v1")),
        ("file:/srv/models/x.gguf", FileRef("/srv/models/x.gguf")),
        ("file:/srv/models//x", FileRef("/srv/models/x")),
        ("org/repo:model.safetensors", HuggingFaceRef("org/repo", selector="model.safetensors")),
        ("https://example.com/m/x.gguf", UrlRef("https://example.com/m/x.gguf")),
        (f"https://Example.com/x.gguf#sha256={SHA.upper()}", UrlRef("https://example.com/x.gguf", SHA)),
        ("http://127.0.0.1:8080/x.gguf", UrlRef("http://127.0.0.1:8080/x.gguf")),
    ],
)
def test_it_parses_every_form(text, expected):
    assert parse_reference(text) == expected


def test_it_gives_one_canonical_string_per_ollama_model():
    spellings = ["ollama:llama3.2", "ollama:llama3.2:latest", "ollama:library/llama3.2:latest"]
    assert {parse_reference(s).canonical for s in spellings} == {"ollama:library/llama3.2:latest"}


def test_it_gives_one_canonical_string_per_hf_model():
    assert parse_reference("org/name").canonical == parse_reference("hf:org/name").canonical == "hf:org/name"
    assert parse_reference("org/name@v1:Q4_K_M").canonical == "hf:org/name@v1:Q4_K_M"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "llama",
        "a/b/c",
        "../etc/passwd",
        "org/..",
        "ftp://example.com/x.gguf",
        "http://example.com/x.gguf",
        "https://example.com/",
        "https://user:pw@example.com/x.gguf",
        "https://example.com/x.gguf#md5=abc",
        "file:relative/path",
        "ollama:UPPER",
        "ollama:a/b/c/d",
        "file:/srv/models/../models/x",
        "https://example.com/a/../x.gguf",
    ],
)
def test_it_refuses_what_no_vendor_supports_with_the_forms(text):
    with pytest.raises(UnsupportedReference) as exc:
        parse_reference(text)
    assert "Supported forms" in str(exc.value)
    assert "ollama:[HOST/][NAMESPACE/]MODEL[:TAG]" in str(exc.value)


def test_it_keeps_entry_folders_apart():
    folders = {parse_reference(t).folder for t in ["org/a", "org/a@v1", "org/a:Q4_K_M", "org/b"]}
    assert len(folders) == 4


def test_loopback_means_loopback():
    with pytest.raises(UnsupportedReference):
        parse_reference("http://127.0.0.1.example.com/x.gguf")
    assert parse_reference("http://[::1]:8080/x.gguf").url == "http://[::1]:8080/x.gguf"


def test_a_quant_tag_is_one_entry_however_it_is_typed():
    assert parse_reference("org/repo:q4_k_m").canonical == parse_reference("org/repo:Q4_K_M").canonical
    assert parse_reference("org/repo:*.Safetensors").selector == "*.Safetensors"

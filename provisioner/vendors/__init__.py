"""The vendors the provisioner routes references to, first match wins (as in rbee)."""

from __future__ import annotations

from provisioner.references import SUPPORTED_FORMS, Reference
from provisioner.vendors.base import Vendor
from provisioner.vendors.huggingface import HuggingFaceVendor
from provisioner.vendors.local import LocalVendor
from provisioner.vendors.ollama import OllamaVendor
from provisioner.vendors.url import UrlVendor

SUPPORTED_FORMS_TEXT = "; ".join(f"{label}: {form}" for label, form, _ in SUPPORTED_FORMS)


def all_vendors() -> list[Vendor]:
    """Built per call so settings (endpoints, tokens, import roots) are read fresh."""
    return [HuggingFaceVendor(), OllamaVendor(), LocalVendor(), UrlVendor()]


def vendor_for(ref: Reference) -> Vendor | None:
    return next((v for v in all_vendors() if v.supports(ref)), None)

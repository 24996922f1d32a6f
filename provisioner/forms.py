from __future__ import annotations

from typing import Any

from django import forms

from catalog.models import Hive
from provisioner.references import Reference, UnsupportedReference, parse_reference
from provisioner.vendors import SUPPORTED_FORMS_TEXT, vendor_for
from provisioner.vendors.base import DownloadError


class HiveChoiceField(forms.ModelChoiceField):
    """A hive chosen by name: the page's select and the JSON API post the same value."""

    def label_from_instance(self, obj: Any) -> str:
        return obj.name if obj.is_online() else f"{obj.name} (offline)"


class DownloadForm(forms.Form):
    model = forms.CharField(
        max_length=512,
        label="Model reference",
        widget=forms.TextInput(
            attrs={
                "placeholder": "meta-llama/Llama-3.2-1B, org/repo-GGUF:Q4_K_M, ollama:llama3.2:1b",
                "autocomplete": "off",
                "spellcheck": "false",
                "autofocus": True,
            }
        ),
    )
    hive = HiveChoiceField(
        queryset=Hive.objects.all(),
        to_field_name="name",
        required=False,
        empty_label=None,
        error_messages={"invalid_choice": "unknown hive %(value)r"},
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reference: Reference | None = None
        self.fields["hive"].initial = Hive.default().name

    def clean_model(self) -> str:
        text = self.cleaned_data["model"]
        try:
            ref = parse_reference(text)
        except UnsupportedReference as exc:
            raise forms.ValidationError(str(exc)) from None
        vendor = vendor_for(ref)
        if vendor is None:
            raise forms.ValidationError(f"No vendor supports '{text}'. Supported forms: {SUPPORTED_FORMS_TEXT}")
        validate = getattr(vendor, "validate", None)
        if validate is not None:
            try:
                validate(ref)
            except DownloadError as exc:
                raise forms.ValidationError(str(exc)) from None
        self.reference = ref
        return ref.canonical

    def clean_hive(self) -> Hive:
        return self.cleaned_data.get("hive") or Hive.default()

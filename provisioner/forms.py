from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django import forms

from catalog.models import Hive
from catalog.windows import DownloadWindow, InvalidWindow
from provisioner.models import DownloadJob
from provisioner.references import Reference, UnsupportedReference, parse_reference
from provisioner.vendors import SUPPORTED_FORMS_TEXT, vendor_for
from provisioner.vendors.base import DownloadError, Plan
from rbee.formatting import human_bytes


class HiveChoiceField(forms.ModelChoiceField):
    """A hive chosen by name: the page's select and the JSON API post the same value."""

    def label_from_instance(self, obj: Any) -> str:
        return obj.name if obj.is_online() else f"{obj.name} (offline)"


class HiveChoicesField(forms.ModelMultipleChoiceField):
    """Several hives chosen by name, as checkboxes on the page and as a list in the API."""

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
    # The page's choice: one or more hives, or every online one at a click (all_online).
    hives = HiveChoicesField(
        queryset=Hive.objects.all(),
        to_field_name="name",
        required=False,
        widget=forms.CheckboxSelectMultiple,
        error_messages={"invalid_choice": "unknown hive %(value)s"},
    )
    all_online = forms.BooleanField(required=False)

    def __init__(self, *args: Any, previewed: Callable[[Hive, str], Plan | None] | None = None, **kwargs: Any) -> None:
        """``previewed``: where to find the plan the admin was shown for (hive, reference);
        given, the form plans the download before accepting it (see ``clean``)."""
        super().__init__(*args, **kwargs)
        self.reference: Reference | None = None
        self.plan: Plan | None = None
        self.previewed = previewed
        self.fields["hive"].initial = Hive.default().name
        self.fields["hives"].initial = [Hive.default().name]

    def clean_model(self) -> str:
        text = self.cleaned_data["model"]
        try:
            ref = parse_reference(text)
        except UnsupportedReference as exc:
            raise forms.ValidationError(str(exc)) from None
        vendor = vendor_for(ref)
        if vendor is None:
            raise forms.ValidationError(f"No vendor supports '{text}'. Supported forms: {SUPPORTED_FORMS_TEXT}")
        try:
            vendor.validate(ref)
        except DownloadError as exc:
            raise forms.ValidationError(str(exc)) from None
        self.reference = ref
        return ref.canonical

    def clean_hive(self) -> Hive:
        return self.cleaned_data.get("hive") or Hive.default()

    def clean(self) -> dict[str, Any]:
        """Refuse what is already known to fail, with the preview's words, creating no job.

        The same plan the preview ran (or the previewed one itself): a missing repo,
        a gated one without a token, unsafe file names, a plan too big for a hive.
        A passing network fault is not refused: the job retries the source itself.
        ``targets`` in the cleaned data: the hives to place the model on.
        """
        cleaned = super().clean() or {}
        targets = self._targets(cleaned)
        if targets is None:
            return cleaned
        cleaned["targets"] = targets
        if self.previewed is None or self.reference is None or self.errors:
            return cleaned
        reference = cleaned["model"]
        busy = set(DownloadJob.objects.active().filter(hive__in=targets, reference=reference).values_list("hive", flat=True))
        planning = [h for h in targets if h.pk not in busy]
        if not planning:
            return cleaned  # the running jobs are the answer; nothing to plan
        plan = next((p for p in (self.previewed(h, reference) for h in planning) if p is not None), None)
        if plan is None:
            vendor = vendor_for(self.reference)
            assert vendor is not None  # clean_model found one
            try:
                plan = vendor.plan(self.reference)
            except DownloadError as exc:
                if not exc.retryable:
                    self.add_error("model", str(exc))
                return cleaned
        for hive in planning:
            usable = hive.usable_bytes()
            if usable is not None and not plan.extra.get("linked") and plan.total_bytes > usable:
                self.add_error(
                    "model",
                    f"Does not fit: {human_bytes(plan.total_bytes)} needed, {human_bytes(usable)} usable on hive "
                    f"{hive.name} (after the reserve).",
                )
                return cleaned
        self.plan = plan
        return cleaned

    def _targets(self, cleaned: dict[str, Any]) -> list[Hive] | None:
        """Every online hive, the hives ticked, or the one hive named (the API's ``hive``)."""
        if cleaned.get("all_online"):
            online = [h for h in Hive.objects.all() if h.is_online()]
            if not online:
                self.add_error("hives", "No hive is online; pick the hives to queue it on.")
                return None
            return online
        if cleaned.get("hives"):
            return list(cleaned["hives"])
        if "hive" in cleaned and "hives" not in self.errors:
            return [cleaned["hive"]]
        return None


class HiveLimitsForm(forms.ModelForm):
    """A hive's limits, from its page and from ``PATCH /api/hives/<name>/``: one validation."""

    class Meta:
        model = Hive
        fields = [
            "max_bytes_per_s",
            "max_concurrent_downloads",
            "download_window",
            "high_watermark_percent",
            "low_watermark_percent",
        ]
        labels = {
            "max_bytes_per_s": "Bandwidth cap (bytes/s)",
            "max_concurrent_downloads": "Downloads at once",
            "download_window": "Download window",
            "high_watermark_percent": "High watermark (%)",
            "low_watermark_percent": "Low watermark (%)",
        }
        widgets = {"download_window": forms.TextInput(attrs={"placeholder": "22:00-06:00"})}

    def clean_download_window(self) -> str:
        text = self.cleaned_data.get("download_window") or ""
        if not text.strip():
            return ""
        try:
            return DownloadWindow.parse(text).canonical
        except InvalidWindow as exc:
            raise forms.ValidationError(str(exc)) from None

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        high, low = cleaned.get("high_watermark_percent"), cleaned.get("low_watermark_percent")
        if high is not None and low is not None and low >= high:
            field = "low_watermark_percent" if "low_watermark_percent" in self.changed_data else "high_watermark_percent"
            self.add_error(field, f"the low watermark ({low}%) must be below the high one ({high}%)")
        return cleaned

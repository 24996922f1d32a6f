from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from catalog.models import ModelEntry, ModelFile
from provisioner.lifecycle import delete_entry
from provisioner.models import DownloadJob, NarrationEvent


class ReadOnlyMixin:
    """Jobs and narration are history: the admin reads them, it does not rewrite them."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class NarrationEventInline(ReadOnlyMixin, admin.TabularInline):
    model = NarrationEvent
    extra = 0
    can_delete = False
    fields = ("seq", "emitted_at", "level", "action", "human")
    readonly_fields = fields
    ordering = ["seq"]


@admin.register(DownloadJob)
class DownloadJobAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ["pk", "reference", "hive", "state", "bytes_done", "bytes_total", "created_at"]
    list_filter = ["state", "hive", "vendor"]
    search_fields = ["reference"]
    inlines = [NarrationEventInline]


@admin.register(NarrationEvent)
class NarrationEventAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ["job", "seq", "emitted_at", "level", "action", "human"]
    list_filter = ["level", "action"]
    search_fields = ["human", "target"]


class ModelFileInline(admin.TabularInline):
    model = ModelFile
    extra = 0
    can_delete = False
    fields = ("path", "size_bytes", "sha256", "media_type")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(ModelEntry)
class ModelEntryAdmin(admin.ModelAdmin):
    list_display = ["name", "vendor", "hive", "size_bytes", "file_count", "status", "integrity", "pinned", "created_at"]
    list_filter = ["vendor", "hive", "status", "integrity", "pinned"]
    search_fields = ["name", "reference", "tags", "notes"]
    fields = (
        "name",
        "notes",
        "tags",
        "pinned",
        "reference",
        "vendor",
        "hive",
        "revision",
        "path",
        "size_bytes",
        "file_count",
        "linked",
        "status",
        "integrity",
        "damaged_files",
        "verified_at",
        "last_used_at",
        "update_revision",
        "previous_revision",
        "created_at",
        "updated_at",
    )
    # Only the admin's own words (and the pin) are editable; what is on disk is the downloader's to say.
    readonly_fields = tuple(f for f in fields if f not in ("name", "notes", "tags", "pinned"))
    inlines = [ModelFileInline]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    # Deleting here is the dashboard's delete: files first, then the entry, narrated.
    def delete_model(self, request: HttpRequest, obj: ModelEntry) -> None:
        try:
            delete_entry(obj, by=request.user)
        except (OSError, ValueError) as exc:
            self.message_user(request, f"Could not delete the files of {obj.name}: {exc}", messages.ERROR)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[ModelEntry]) -> None:
        for entry in queryset.select_related("hive"):
            self.delete_model(request, entry)

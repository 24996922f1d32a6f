from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from catalog.models import Hive, ModelEntry, ModelFile


@admin.register(Hive)
class HiveAdmin(admin.ModelAdmin):
    list_display = ["name", "models_dir", "last_heartbeat", "disk_free", "disk_total"]
    readonly_fields = ["last_heartbeat", "disk_total", "disk_free", "created_at"]


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
    list_display = ["name", "vendor", "hive", "size_bytes", "file_count", "status", "created_at"]
    list_filter = ["vendor", "hive", "status"]
    search_fields = ["name", "reference", "tags", "notes"]
    fields = (
        "name",
        "notes",
        "tags",
        "reference",
        "vendor",
        "hive",
        "revision",
        "path",
        "size_bytes",
        "file_count",
        "linked",
        "status",
        "created_at",
        "updated_at",
    )
    # Only the admin's own words are editable; what is on disk is the downloader's to say.
    readonly_fields = tuple(f for f in fields if f not in ("name", "notes", "tags"))
    inlines = [ModelFileInline]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

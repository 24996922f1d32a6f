from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

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

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.http import HttpRequest

from catalog.models import ApiToken, Hive


@admin.register(Hive)
class HiveAdmin(admin.ModelAdmin):
    list_display = ["name", "models_dir", "last_heartbeat", "disk_free", "disk_total"]
    readonly_fields = ["last_heartbeat", "disk_total", "disk_free", "created_at"]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "user", "prefix", "created_at", "last_used_at"]
    fields = ["name", "user", "prefix", "created_at", "last_used_at"]
    readonly_fields = ["prefix", "created_at", "last_used_at"]

    def save_model(self, request: HttpRequest, obj: ApiToken, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        token, raw = ApiToken.issue(obj.user, obj.name)
        obj.pk, obj.prefix, obj.token_hash = token.pk, token.prefix, token.token_hash
        obj._state.adding = False
        messages.warning(request, f"New API token (shown once, copy it now): {raw}")

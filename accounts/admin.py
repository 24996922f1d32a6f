from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.http import HttpRequest

from accounts.models import ApiToken


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "user", "prefix", "created_at", "last_used_at", "expires_at"]
    fields = ["name", "user", "prefix", "expires_at", "created_at", "last_used_at"]
    readonly_fields = ["prefix", "created_at", "last_used_at"]

    def save_model(self, request: HttpRequest, obj: ApiToken, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        # Only the hash is stored: the raw value exists in this one response and nowhere else.
        token, raw = ApiToken.issue(obj.user, obj.name, expires_at=obj.expires_at)
        obj.pk, obj.prefix, obj.token_hash = token.pk, token.prefix, token.token_hash
        obj._state.adding = False
        messages.warning(request, f"New API token (shown once, copy it now): {raw}")

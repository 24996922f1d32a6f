from __future__ import annotations

from django.contrib import admin

from catalog.models import Hive


@admin.register(Hive)
class HiveAdmin(admin.ModelAdmin):
    list_display = ["name", "models_dir", "peer_url", "last_heartbeat", "disk_free", "disk_total"]
    # The worker advertises peer_url with every heartbeat: an edit here would not last.
    readonly_fields = ["last_heartbeat", "disk_total", "disk_free", "peer_url", "created_at"]

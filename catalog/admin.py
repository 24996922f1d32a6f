from __future__ import annotations

from django.contrib import admin

from catalog.models import Hive


@admin.register(Hive)
class HiveAdmin(admin.ModelAdmin):
    list_display = [
        "name", "models_dir", "peer_url", "last_heartbeat", "disk_free", "disk_total", "high_watermark_percent",
        "low_watermark_percent",
    ]  # fmt: skip
    # GPUs and the peer URL are what the hive's worker reports with its heartbeat.
    readonly_fields = ["last_heartbeat", "disk_total", "disk_free", "gpus", "peer_url", "created_at"]

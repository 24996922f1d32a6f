from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.db import migrations, models


def fill_models_root(apps, schema_editor):  # type: ignore[no-untyped-def]
    """Existing entries were installed below their hive's models dir as it is now."""
    ModelEntry = apps.get_model("catalog", "ModelEntry")
    for entry in ModelEntry.objects.select_related("hive"):
        entry.models_root = str(Path(entry.hive.models_dir or settings.RBEE_MODELS_DIR).resolve())
        entry.save(update_fields=["models_root"])


class Migration(migrations.Migration):
    dependencies = [("catalog", "0002_hive_name_is_a_queue_name")]

    operations = [
        migrations.AddField(
            model_name="modelentry",
            name="models_root",
            field=models.CharField(blank=True, max_length=1024),
        ),
        migrations.RunPython(fill_models_root, migrations.RunPython.noop),
    ]

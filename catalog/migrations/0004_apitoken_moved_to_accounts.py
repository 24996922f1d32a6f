from __future__ import annotations

from django.db import migrations


class Migration(migrations.Migration):
    """API tokens live in the accounts app now; its migration copied the rows first."""

    dependencies = [
        ("catalog", "0003_entry_models_root"),
        ("accounts", "0002_tokens_from_catalog"),
    ]

    operations = [migrations.DeleteModel(name="ApiToken")]

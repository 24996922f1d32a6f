"""Tokens issued before auth had its own app keep working: their rows are copied over.

Only hashes are copied (there is nothing else); the old table goes in
catalog's next migration, which waits for this one.
"""

from __future__ import annotations

from django.db import migrations

FIELDS = ("user_id", "name", "prefix", "token_hash", "created_at", "last_used_at")


def copy_rows(apps, schema_editor, source: str, target: str) -> None:  # type: ignore[no-untyped-def]
    Source = apps.get_model(source, "ApiToken")
    Target = apps.get_model(target, "ApiToken")
    for row in Source.objects.values(*FIELDS):
        # created_at is auto_now_add: set it after create, or every token would look new.
        copy = Target.objects.create(**row)
        Target.objects.filter(pk=copy.pk).update(created_at=row["created_at"])


def forwards(apps, schema_editor):  # type: ignore[no-untyped-def]
    copy_rows(apps, schema_editor, "catalog", "accounts")


def backwards(apps, schema_editor):  # type: ignore[no-untyped-def]
    copy_rows(apps, schema_editor, "accounts", "catalog")


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0001_initial"),
        ("catalog", "0003_entry_models_root"),
    ]

    operations = [migrations.RunPython(forwards, backwards)]

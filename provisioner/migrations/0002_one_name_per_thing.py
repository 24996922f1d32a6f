from __future__ import annotations

from django.db import migrations


class Migration(migrations.Migration):
    """``worker`` said four things and ``event_seq`` was also called ``last_seq``."""

    dependencies = [("provisioner", "0001_initial")]

    operations = [
        migrations.RenameField(model_name="downloadjob", old_name="worker", new_name="process"),
        migrations.RenameField(model_name="downloadjob", old_name="event_seq", new_name="last_seq"),
    ]

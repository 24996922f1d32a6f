"""What happens to a catalog entry after its download: deleting it, for now.

A delete is a disk change plus a narrated event, so it is the provisioner's work:
the page, the API and the Django admin all come here.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction

from catalog.models import ModelEntry
from provisioner import engines
from provisioner.models import Action, DownloadJob, NarrationEvent

logger = logging.getLogger(__name__)


def delete_entry(entry: ModelEntry, by: Any = None) -> None:
    """Remove the entry's files, then the entry; told on the job that brought it.

    Raises OSError or ValueError (and changes nothing in the catalog) when the files
    cannot be removed safely.
    """
    entry.delete_files()
    engines.unlink_entry(entry)  # after: a refused delete leaves the engine views as they were
    human = f"🗑 Model '{entry.name}' deleted from hive '{entry.hive.name}'" + (f" by {by}" if by else "")
    fields = {"entry_id": entry.pk, "path": entry.path, "hive": entry.hive.name}
    with transaction.atomic():
        job = DownloadJob.objects.filter(hive=entry.hive, reference=entry.reference).order_by("-created_at").first()
        if job is not None:
            job.narrate(Action.DELETE, human, target=entry.reference, fields=fields)
        else:
            # An entry no job brought (recovered, or made in the admin): a job-less event.
            NarrationEvent.objects.create(
                job=None, seq=0, action=Action.DELETE, target=entry.reference, human=human, fields=fields
            )
            logger.info("%s", human)
        entry.delete()

"""Starting a hive's worker: embedded inside the web process, or as its own process."""

from __future__ import annotations

import logging

from django.db import close_old_connections

from catalog.models import Hive
from provisioner.recovery import recover_hive

logger = logging.getLogger(__name__)


def start_embedded_worker() -> None:
    """The web process is the local hive's only worker: repair, then requeue all."""
    try:
        hive = Hive.local()
        requeued = recover_hive(hive, sole_worker=True)
        hive.beat()
        if requeued:
            logger.info("requeued %d unfinished download(s): %s", len(requeued), requeued)
    except Exception:
        # A database that is not migrated yet must not stop the server from starting.
        logger.exception("could not recover the local hive at start")
    finally:
        close_old_connections()

"""``manage.py hive_worker --hive NAME``: the download worker of one hive, scaled deployment.

Run on the machine whose disk is the hive's catalog (``make worker HIVE=NAME``),
with the web process's DATABASE_URL and REDIS_URL. It registers the hive, repairs
its disk, heartbeats it and runs django-tasks-db's worker on the queue named after
it, so only that hive's downloads run here.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.core.validators import validate_slug
from django.db import DatabaseError, connection

from catalog.models import Hive

logger = logging.getLogger("provisioner.worker")

# DBTaskResult.queue_name is a CharField(max_length=32), and the queue is the hive's name.
QUEUE_NAME_MAX = 32


class Command(BaseCommand):
    help = "Run the download worker of one hive: register and heartbeat it, and run its queue's downloads."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--hive", required=True, help="the hive this worker stands for; its queue has its name")
        parser.add_argument("--models-dir", help="where this hive keeps its models (default: RBEE_MODELS_DIR)")
        parser.add_argument(
            "--interval", type=float, default=1.0, help="seconds between looks at an empty queue (default: 1)"
        )

    def handle(self, *args: Any, hive: str, models_dir: str | None, interval: float, **options: Any) -> None:
        if not settings.RBEE_SCALED:
            raise CommandError(
                "hive_worker is for the scaled deployment (DATABASE_URL set, RBEE_SCALED=true). "
                "The embedded default runs its downloads inside the web process: `make run` is all it needs."
            )
        try:
            validate_slug(hive)
        except ValidationError:
            raise CommandError(f"--hive {hive!r}: use letters, digits, '-' and '_' only") from None
        if len(hive) > QUEUE_NAME_MAX:
            raise CommandError(f"--hive {hive!r}: at most {QUEUE_NAME_MAX} characters (django-tasks-db's queue names)")
        if interval < 0:
            raise CommandError("--interval must be zero or more")
        self._check_backend()
        path = Path(models_dir) if models_dir else Path(settings.RBEE_MODELS_DIR)
        if connection.vendor == "sqlite":
            logger.warning("the database is SQLite: workers on other machines cannot share it (set DATABASE_URL)")
        record = self._register(hive, path)

        from provisioner.worker import run_hive_worker

        run_hive_worker(record, interval=interval)

    def _check_backend(self) -> None:
        from django.tasks import task_backends
        from django_tasks_db.backend import DatabaseBackend

        from provisioner.tasks import run_download

        backend = task_backends[run_download.backend]
        if not isinstance(backend, DatabaseBackend):
            raise CommandError(
                f"the task backend is {type(backend).__name__}, not django-tasks-db's DatabaseBackend: "
                "hive workers consume the queues that live in the database"
            )

    def _register(self, name: str, models_dir: Path) -> Hive:
        try:
            # From here on this process stands for the hive: it runs its jobs on its disk.
            hive = Hive.register(name, models_dir, current=True)
        except DatabaseError as exc:
            raise CommandError(
                f"cannot register hive {name!r}: {exc}".strip() + " — is the database migrated (manage.py migrate)?"
            ) from exc
        logger.info("hive %s registered, models in %s", name, hive.path)
        return hive

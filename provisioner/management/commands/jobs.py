"""``manage.py jobs ls|cancel``: the download jobs from a shell."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from rich.console import Console
from rich.table import Table

from provisioner.models import DownloadJob
from rbee.formatting import human_bytes


class Command(BaseCommand):
    help = "List download jobs, or cancel one."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="{ls,cancel}")
        ls = actions.add_parser("ls", help="the newest jobs")
        ls.add_argument("--state", choices=[s for s, _ in DownloadJob.STATE_CHOICES])
        ls.add_argument("--hive")
        ls.add_argument("--limit", type=int, default=DownloadJob.RECENT)
        cancel = actions.add_parser("cancel", help="cancel a queued or running job")
        cancel.add_argument("job", type=int)

    def handle(self, *args: Any, action: str, **options: Any) -> None:
        self.console = Console(file=self.stdout, highlight=False, soft_wrap=True)  # type: ignore[arg-type]
        getattr(self, f"do_{action}")(**options)

    def do_ls(self, *, state: str | None, hive: str | None, limit: int, **_: Any) -> None:
        jobs = DownloadJob.objects.select_related("hive")
        if state:
            jobs = jobs.filter(state=state)
        if hive:
            jobs = jobs.filter(hive__name=hive)
        table = Table("id", "state", "model", "hive", "progress", "error", box=None)
        for job in jobs[:limit]:
            progress = f"{human_bytes(job.bytes_done)} of {human_bytes(job.bytes_total)}"
            table.add_row(str(job.pk), job.state, job.display_name, job.hive.name, progress, job.error[:60])
        self.console.print(table if jobs.exists() else "No jobs.")

    def do_cancel(self, *, job: int, **_: Any) -> None:
        found = DownloadJob.objects.select_related("hive").filter(pk=job).first()
        if found is None:
            raise CommandError(f"no job #{job}")
        if not found.cancel(by="the command line"):
            raise CommandError(f"job #{job} is {found.state}; only a queued or running job can be cancelled")
        self.console.print(f"Job #{job}: {'cancelled' if found.state == DownloadJob.CANCELLED else 'cancelling…'}")

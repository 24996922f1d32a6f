"""``manage.py models pull|ls|show|rm``: the catalog from a shell, through the same code
as the pages and the API (the download form's checks, DownloadJob, delete_entry)."""

from __future__ import annotations

import json
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn
from rich.table import Table

from catalog.models import Hive, ModelEntry
from provisioner import running
from provisioner.forms import DownloadForm
from provisioner.lifecycle import delete_entry
from provisioner.models import Action, DownloadJob
from provisioner.references import UnsupportedReference, parse_reference
from rbee.formatting import human_bytes

POLL_S = 0.25


class Command(BaseCommand):
    help = "Pull, list, show and remove the models of a hive's catalog."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="{pull,ls,show,rm}")
        pull = actions.add_parser("pull", help="download a model and follow the job until it ends")
        pull.add_argument("reference", help="e.g. org/name, org/name-GGUF:Q4_K_M, ollama:llama3.2:1b")
        pull.add_argument("--hive", help="the hive to download to (default: the default hive)")
        pull.add_argument("--no-follow", action="store_true", help="queue the job and return at once")
        ls = actions.add_parser("ls", help="list catalog entries")
        ls.add_argument("--hive")
        ls.add_argument("--vendor")
        ls.add_argument("-q", "--query", default="", help="search names, references, tags and notes")
        ls.add_argument("--json", action="store_true", help="one JSON document instead of a table")
        for name, what in (("show", "an entry with its files"), ("rm", "delete an entry and its files")):
            sub = actions.add_parser(name, help=what)
            sub.add_argument("entry", help="an entry id, or a reference (with --hive when on several hives)")
            sub.add_argument("--hive")
            if name == "show":
                sub.add_argument("--json", action="store_true")

    def handle(self, *args: Any, action: str, **options: Any) -> None:
        self.console = Console(file=self.stdout, highlight=False, soft_wrap=True)  # type: ignore[arg-type]
        getattr(self, f"do_{action}")(**options)

    # -- pull -------------------------------------------------------------------------

    def do_pull(self, *, reference: str, hive: str | None, no_follow: bool, **_: Any) -> None:
        target = _hive(hive) if hive else Hive.default()
        form = DownloadForm({"model": reference, "hive": target.name}, previewed=lambda _hive, _ref: None)
        if not form.is_valid():
            raise CommandError(" ".join(str(e) for errors in form.errors.values() for e in errors))
        plan = form.plan.to_json() if form.plan is not None else None
        # Followed: this process runs the job (embedded) or watches the hive's worker run it.
        # Not followed: the job waits in the table for the hive's server or worker.
        job, created = DownloadJob.submit(form.cleaned_data["model"], target, None, plan=plan, enqueue=not no_follow)
        self.console.print(
            f"{'Queued' if created else 'Following'} job #{job.pk}: {job.display_name} on hive {target.name}"
        )
        if no_follow:
            return
        if not created and job.state == DownloadJob.QUEUED and target.is_here():
            DownloadJob.dispatch(target)  # a job left queued by a stopped pull: this process runs it now
        try:
            job = self._follow(job)
        except KeyboardInterrupt:
            if running.stop_all():
                self.console.print("Stopped; the partial files are kept. Pull again to resume.")
            else:
                self.console.print(f"Stopped following; job #{job.pk} goes on.")
            raise SystemExit(130) from None
        if job.state != DownloadJob.SUCCEEDED:
            raise CommandError(f"job #{job.pk} {job.state}: {job.error or 'see its narration'}")
        assert job.entry is not None
        self.console.print(f"Ready: {job.entry.path}")

    def _follow(self, job: DownloadJob) -> DownloadJob:
        """Print the job's story and a progress bar until it ends."""
        seq = 0
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=self.console, transient=True) as bar:
            task = bar.add_task(job.display_name, total=None)
            while True:
                job.refresh_from_db()
                for event in job.events.filter(seq__gt=seq).exclude(action=Action.PROGRESS).order_by("seq"):
                    bar.console.print(f"[dim]{event.emitted_at:%H:%M:%S}[/dim] {event.human}")
                    seq = event.seq
                bar.update(task, total=job.bytes_total, completed=job.bytes_done)
                if job.is_finished:
                    return job
                time.sleep(POLL_S)

    # -- ls, show, rm -----------------------------------------------------------------

    def do_ls(self, *, hive: str | None, vendor: str | None, query: str, json: bool, **_: Any) -> None:
        entries = ModelEntry.objects.select_related("hive").search(query).order_by("hive__name", "name")
        if hive:
            entries = entries.filter(hive=_hive(hive))
        if vendor:
            entries = entries.filter(vendor=vendor)
        if json:
            self.stdout.write(_dumps([_entry_json(e) for e in entries]))
            return
        table = Table("id", "name", "hive", "vendor", "size", "status", "reference", box=None)
        for e in entries:
            table.add_row(str(e.pk), e.name, e.hive.name, e.vendor, human_bytes(e.size_bytes), e.status, e.reference)
        self.console.print(table if entries else "No models yet: `manage.py models pull ORG/NAME` adds one.")

    def do_show(self, *, entry: str, hive: str | None, json: bool, **_: Any) -> None:
        found = _entry(entry, hive)
        if json:
            self.stdout.write(_dumps(_entry_json(found, files=True)))
            return
        for label, value in _entry_json(found).items():
            self.console.print(f"[bold]{label:>10}[/bold]  {value}")
        table = Table("file", "size", "sha256", box=None)
        for f in found.files.all():
            table.add_row(f.path, human_bytes(f.size_bytes), f.sha256)
        self.console.print(table)

    def do_rm(self, *, entry: str, hive: str | None, **_: Any) -> None:
        found = _entry(entry, hive)
        try:
            delete_entry(found, by="the command line")
        except (OSError, ValueError) as exc:
            raise CommandError(f"could not delete the files of {found.name}: {exc}") from None
        self.console.print(f"Deleted {found.name} ({human_bytes(found.size_bytes)}) from hive {found.hive.name}.")


def _hive(name: str) -> Hive:
    hive = Hive.objects.filter(name=name).first()
    if hive is None:
        raise CommandError(f"no hive named {name!r}; hives: {', '.join(Hive.objects.values_list('name', flat=True))}")
    return hive


def _entry(text: str, hive: str | None) -> ModelEntry:
    entries = ModelEntry.objects.select_related("hive")
    if hive:
        entries = entries.filter(hive=_hive(hive))
    if text.isdigit():
        found = entries.filter(pk=int(text))
    else:
        try:
            reference = parse_reference(text).canonical
        except UnsupportedReference as exc:
            raise CommandError(str(exc)) from None
        found = entries.filter(reference=reference)
    matches = list(found[:2])
    if not matches:
        raise CommandError(f"no catalog entry {text!r}")
    if len(matches) > 1:
        raise CommandError(f"{text!r} is on several hives; name one with --hive")
    return matches[0]


def _entry_json(entry: ModelEntry, *, files: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": entry.pk,
        "name": entry.name,
        "reference": entry.reference,
        "hive": entry.hive.name,
        "vendor": entry.vendor,
        "revision": entry.revision,
        "size_bytes": entry.size_bytes,
        "status": entry.status,
        "path": entry.path,
    }
    if files:
        data["files"] = [{"path": f.path, "size": f.size_bytes, "sha256": f.sha256} for f in entry.files.all()]
    return data


def _dumps(data: object) -> str:
    return json.dumps(data, indent=2)

"""Download jobs and their narration: the durable record of every download.

A job's life cycle lives here, on the model: every state change is a conditional
UPDATE (so two processes never both win one transition) and is narrated in the
same transaction as the change, so whoever sees the state sees its story.
"""

from __future__ import annotations

import os
import shutil
import socket
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import IntegrityError, models, transaction
from django.db.models import F, Q
from django.urls import reverse
from django.utils import timezone

from catalog.models import Hive, ModelEntry
from provisioner.narration import push_event, push_job_created
from provisioner.references import UnsupportedReference, parse_reference
from rbee.formatting import human_bytes


class Action(models.TextChoices):
    """Every narration action, after rbee's names: a typo cannot invent a new one."""

    QUEUED = "model_download_queued"
    START = "model_download_start"
    PLAN = "model_download_plan"
    PROGRESS = "model_download_progress"
    RESUMED = "model_download_resumed"
    RETRY = "model_download_retry"
    FILE_DONE = "model_download_file_done"
    EXISTS = "model_download_exists"
    UNSUPPORTED = "model_download_unsupported"
    COMPLETE = "model_download_complete"
    FAILED = "model_download_failed"
    CANCEL_REQUESTED = "model_download_cancel_requested"
    CANCELLED = "model_download_cancelled"
    PAUSE_REQUESTED = "model_download_pause_requested"
    PAUSED = "model_download_paused"
    WAITING = "model_download_waiting"
    PRIORITIZED = "model_download_prioritized"
    DELETE = "model_delete"
    # Disks: making room, shared bytes, and the checks and jobs that keep an entry whole and current.
    EVICTED = "model_evicted"
    LINKED = "model_download_linked"
    VERIFY_START = "model_verify_start"
    VERIFY_COMPLETE = "model_verify_complete"
    REPAIR_START = "model_repair_start"
    UPDATE_AVAILABLE = "model_update_available"
    UPDATE_SWITCHED = "model_update_switched"
    SOURCE = "model_download_source"


def this_process() -> str:
    """How a job names the process running it: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def stale_before() -> Any:
    """Heartbeats older than this mean the process running a job is gone."""
    return timezone.now() - timedelta(seconds=settings.RBEE_HEARTBEAT_S * 3)


class DownloadJobQuerySet(models.QuerySet["DownloadJob"]):
    def active(self) -> DownloadJobQuerySet:
        return self.filter(state__in=DownloadJob.ACTIVE_STATES)

    def recent(self) -> DownloadJobQuerySet:
        """What the job list shows: the newest jobs."""
        return self.select_related("hive")[: DownloadJob.RECENT]

    def orphaned(self) -> DownloadJobQuerySet:
        """Running jobs whose process stopped heartbeating."""
        stale = Q(heartbeat_at__lt=stale_before()) | Q(heartbeat_at__isnull=True)
        return self.filter(stale, state=DownloadJob.RUNNING)


class DownloadJob(models.Model):
    """One request to put a model on a hive, and the durable record of its progress.

    The task backend only carries the job id; everything a restarted process needs to
    resume (state, the plan, bytes done) lives here.
    """

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    PAUSED = "paused"
    STATE_CHOICES = [(s, s) for s in (QUEUED, RUNNING, PAUSED, SUCCEEDED, FAILED, CANCELLED)]
    # Active: the job for its model on its hive (a paused one keeps its bytes to resume).
    ACTIVE_STATES = (QUEUED, RUNNING, PAUSED)
    FINISHED_STATES = (SUCCEEDED, FAILED, CANCELLED)
    # Failures a retry cannot change: the same reference fails the same way again.
    PERMANENT_ERRORS = ("unsupported", "unsafe_path", "not_found")
    RECENT = 50
    # What a job does to the model: fetch it, re-hash it, re-fetch what is damaged, or
    # fetch what changed upstream. One active job per model whatever its kind.
    DOWNLOAD, VERIFY, REPAIR, UPDATE = "download", "verify", "repair", "update"
    KIND_CHOICES = [(k, k) for k in (DOWNLOAD, VERIFY, REPAIR, UPDATE)]

    reference = models.CharField(max_length=512, help_text="Canonical model reference")
    hive = models.ForeignKey(Hive, on_delete=models.PROTECT, related_name="jobs")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    state = models.CharField(max_length=16, choices=STATE_CHOICES, default=QUEUED, db_index=True)
    kind = models.CharField(max_length=16, choices=KIND_CHOICES, default=DOWNLOAD)
    vendor = models.CharField(max_length=32, blank=True)
    bytes_done = models.BigIntegerField(default=0)
    bytes_total = models.BigIntegerField(null=True, blank=True)
    # Where the bytes came from (see provisioner.peers): another hive of the fleet, or the source.
    bytes_from_peers = models.BigIntegerField(default=0)
    bytes_from_origin = models.BigIntegerField(default=0)
    speed_bps = models.FloatField(null=True, blank=True)
    plan = models.JSONField(null=True, blank=True, help_text="Files, sizes and revision, fixed before the first byte")
    revision = models.CharField(max_length=128, blank=True)
    error = models.TextField(blank=True)
    error_kind = models.CharField(max_length=32, blank=True)
    entry = models.ForeignKey(ModelEntry, null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs")
    cancel_requested = models.BooleanField(default=False)
    pause_requested = models.BooleanField(default=False)
    priority = models.IntegerField(default=0, help_text="Higher runs first among the hive's queued jobs")
    dispatched_at = models.DateTimeField(
        null=True, blank=True, help_text="When it was sent to its hive's task queue; empty: waiting to be sent"
    )
    process = models.CharField(max_length=128, blank=True, help_text="host:pid of the process running it now")
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    last_seq = models.PositiveIntegerField(default=0, help_text="Seq of the last narration event")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = DownloadJobQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            # The database, not a check-then-insert, makes identical submissions share a job.
            models.UniqueConstraint(
                fields=["hive", "reference"],
                condition=Q(state__in=("queued", "running", "paused")),
                name="one_active_job_per_hive_reference",
            )
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.reference}"

    def get_absolute_url(self) -> str:
        return reverse("job_detail", args=[self.pk])

    @property
    def is_active(self) -> bool:
        return self.state in self.ACTIVE_STATES

    @property
    def is_finished(self) -> bool:
        return self.state in self.FINISHED_STATES

    @property
    def can_retry(self) -> bool:
        """Failed or cancelled, and not for a reason that would only happen again."""
        if self.state == self.CANCELLED:
            return True
        return self.state == self.FAILED and self.error_kind not in self.PERMANENT_ERRORS

    @property
    def percent(self) -> float | None:
        if not self.bytes_total:
            return 100.0 if self.state == self.SUCCEEDED else None
        return min(100.0, 100.0 * self.bytes_done / self.bytes_total)

    @property
    def eta_s(self) -> float | None:
        if self.state != self.RUNNING or not self.speed_bps or not self.bytes_total:
            return None
        return max(0.0, (self.bytes_total - self.bytes_done) / self.speed_bps)

    @property
    def display_name(self) -> str:
        try:
            return parse_reference(self.reference).display_name
        except UnsupportedReference:
            return self.reference

    @property
    def partial_dir(self) -> Path:
        return self.hive.path / ".partial" / str(self.pk)

    def queue_position(self) -> int | None:
        """Place in this hive's queue, so an admin knows why nothing moves yet."""
        if self.state != self.QUEUED:
            return None
        ahead = DownloadJob.objects.filter(hive=self.hive_id, state=self.QUEUED).filter(
            Q(priority__gt=self.priority)
            | Q(priority=self.priority, created_at__lt=self.created_at)
            | Q(priority=self.priority, created_at=self.created_at, pk__lt=self.pk)
        )
        return ahead.count() + 1

    # -- the life cycle ---------------------------------------------------------------

    @classmethod
    def submit(
        cls,
        reference: str,
        hive: Hive,
        user: Any,
        *,
        plan: dict[str, Any] | None = None,
        enqueue: bool = True,
        kind: str = DOWNLOAD,
        entry: ModelEntry | None = None,
    ) -> tuple[DownloadJob, bool]:
        """Queue a download, or return the active job for the same model on the hive.

        Returns (job, created). ``plan`` is what the admin was shown in the preview (a
        plan's JSON): the job downloads exactly that instead of asking the source again.
        ``enqueue=False`` leaves the job in the table for the hive's running worker to
        find (a command that returns at once must not run it in its own process).
        ``kind`` and ``entry``: a verify, repair or update of that catalog entry.
        Concurrent identical submissions race on the partial unique index; the loser
        reads the winner's row.
        """
        try:
            reference = parse_reference(reference).canonical
        except UnsupportedReference:
            pass  # queued as typed; the run narrates model_download_unsupported
        for _ in range(5):
            existing = cls.objects.active().filter(hive=hive, reference=reference).first()
            if existing:
                return existing, False
            try:
                with transaction.atomic():
                    job = cls.objects.create(reference=reference, hive=hive, requested_by=user, kind=kind, entry=entry)
                    if plan is not None and plan.get("reference") == reference:
                        job.plan, job.bytes_total, job.revision = plan, _plan_total(plan), plan.get("revision", "")
                        job.save(update_fields=["plan", "bytes_total", "revision", "updated_at"])
                    job.narrate(
                        Action.QUEUED,
                        ("Queued" if kind == cls.DOWNLOAD else f"Queued a {kind} of")
                        + f" '{job.display_name}' on hive '{hive.name}'"
                        + ("" if hive.is_online() else f" — hive '{hive.name}' is offline; the job waits for its worker"),
                        fields={"hive": hive.name, "queue_position": job.queue_position(), "kind": kind},
                    )
                    hive.refresh_from_db(fields=["download_window"])
                    if not hive.window_open():
                        job.narrate(
                            Action.WAITING,
                            f"Waiting for the download window {hive.window.label} of hive '{hive.name}'"
                            if hive.window
                            else "Waiting",
                            fields={"window": hive.download_window},
                        )
                    transaction.on_commit(partial(push_job_created, job))
                    if enqueue:
                        transaction.on_commit(partial(DownloadJob.dispatch, hive))
                return job, True
            except IntegrityError:
                continue
        raise RuntimeError(f"could not submit {reference}")  # pragma: no cover - would need 5 lost races

    def enqueue(self) -> None:
        """Hand the job to its hive's queue once the row that describes it is committed."""
        # The task module imports this one: the task is looked up when it is needed.
        from provisioner.tasks import send_to_queue

        job_id, queue = self.pk, self.hive.name
        DownloadJob.objects.filter(pk=job_id).update(dispatched_at=timezone.now())
        transaction.on_commit(lambda: send_to_queue(job_id, queue))

    @classmethod
    def dispatch(cls, hive: Hive) -> list[int]:
        """Send the hive's waiting jobs to its queue: highest priority, then oldest, first,
        as many as its free slots, and none while its download window is closed.

        Called when a job is queued, ends, pauses or moves up, when limits change, and
        on every hive heartbeat (so an opening window starts its jobs). Returns the ids
        sent. A job claims its slot again when it starts (``claim``), so a race here
        can only delay a job, never run one too many.
        """
        hive.refresh_from_db()
        if not hive.window_open():
            return []
        jobs = cls.objects.filter(hive=hive)
        busy = jobs.filter(Q(state=cls.RUNNING) | Q(state=cls.QUEUED, dispatched_at__isnull=False)).count()
        free = hive.max_concurrent_downloads - busy
        sent = []
        for job in jobs.filter(state=cls.QUEUED, dispatched_at__isnull=True).order_by("-priority", "created_at", "pk")[
            : max(0, free)
        ]:
            with transaction.atomic():
                if cls.objects.filter(pk=job.pk, state=cls.QUEUED, dispatched_at__isnull=True).update(
                    dispatched_at=timezone.now()
                ):
                    job.enqueue()
                    sent.append(job.pk)
        return sent

    def claim(self, process: str) -> bool:
        """Take a queued job, or a running one whose process is gone, for this process.

        The update is conditional so two processes never run one job; the hive's row is
        locked meanwhile so its slots are counted by one process at a time. A job that
        may not start now (window closed, slots full) goes back to waiting to be sent.
        """
        now = timezone.now()
        with transaction.atomic():
            hive = Hive.objects.select_for_update().get(pk=self.hive_id)
            running = DownloadJob.objects.filter(hive=hive, state=self.RUNNING).exclude(pk=self.pk).count()
            if not hive.window_open() or running >= hive.max_concurrent_downloads:
                DownloadJob.objects.filter(pk=self.pk, state=self.QUEUED).update(dispatched_at=None)
                return False
            claimed = (
                DownloadJob.objects.filter(pk=self.pk)
                .filter(Q(state=self.QUEUED) | Q(pk__in=DownloadJob.objects.orphaned().values("pk")))
                .update(
                    state=self.RUNNING,
                    process=process,
                    heartbeat_at=now,
                    started_at=self.started_at or now,
                    dispatched_at=None,
                    pause_requested=False,
                )
            )
        if claimed:
            self.refresh_from_db()
        return bool(claimed)

    def heartbeat(self) -> str:
        """Called by the running process: ``"ok"``, ``"cancel"`` or ``"lost"``.

        The heartbeat only lands while this process still owns the job: a process
        that stalled past three heartbeats may find the job resumed elsewhere.
        """
        mine = DownloadJob.objects.filter(pk=self.pk, state=self.RUNNING, process=self.process)
        if mine.filter(cancel_requested=False, pause_requested=False).update(heartbeat_at=timezone.now()):
            return "ok"
        if mine.filter(cancel_requested=True).exists():
            return "cancel"
        return "pause" if mine.filter(pause_requested=True).exists() else "lost"

    def record_progress(self, bytes_done: int, speed_bps: float | None) -> None:
        self.bytes_done, self.speed_bps = bytes_done, speed_bps
        DownloadJob.objects.filter(pk=self.pk).update(bytes_done=bytes_done, speed_bps=speed_bps)

    def add_source_bytes(self, *, peers: int) -> None:
        """Count bytes a peer hive served; an UPDATE that adds, so no count is lost."""
        DownloadJob.objects.filter(pk=self.pk).update(bytes_from_peers=F("bytes_from_peers") + peers)
        self.refresh_from_db(fields=["bytes_from_peers"])

    def record_origin_bytes(self, total: int) -> None:
        """Once every file is on disk: what no peer served came from the origin."""
        self.bytes_from_origin = max(0, total - self.bytes_from_peers)
        DownloadJob.objects.filter(pk=self.pk).update(bytes_from_origin=self.bytes_from_origin)

    def cancel(self, by: Any = None) -> bool:
        """Cancel: a queued job on the spot, a running one by asking its process to stop.

        Returns False when the state allows no cancel (a finished job).
        """
        who = f" by {by}" if by else ""
        with transaction.atomic():
            was = self.state
            if DownloadJob.objects.filter(pk=self.pk, state__in=(self.QUEUED, self.PAUSED)).update(
                state=self.CANCELLED, cancel_requested=True, finished_at=timezone.now(), dispatched_at=None
            ):
                self.refresh_from_db()
                if was == self.PAUSED:
                    self.narrate(Action.CANCELLED, f"⏹ Cancelled{who} while paused; partial files removed", level="warn")
                    self.discard_partial_files()
                else:
                    self.narrate(Action.CANCELLED, f"⏹ Cancelled{who} before it started", level="warn")
                transaction.on_commit(partial(DownloadJob.dispatch, self.hive))
                return True
            if DownloadJob.objects.filter(pk=self.pk, state=self.RUNNING, cancel_requested=False).update(
                cancel_requested=True
            ):
                self.refresh_from_db()
                self.narrate(Action.CANCEL_REQUESTED, f"Cancel requested{who}; stopping…", level="warn")
                return True
        self.refresh_from_db()
        return False

    def discard_partial_files(self) -> None:
        """Where this process sees the hive's disk; otherwise the hive's worker drops them
        on its next heartbeat (partials of finished jobs are orphans)."""
        if self.hive.is_here():
            shutil.rmtree(self.partial_dir, ignore_errors=True)

    def pause(self, by: Any = None) -> bool:
        """Keep the bytes, free the slot: a queued job on the spot, a running one by asking
        its process to stop. Returns False when the state allows no pause."""
        who = f" by {by}" if by else ""
        with transaction.atomic():
            if DownloadJob.objects.filter(pk=self.pk, state=self.QUEUED).update(
                state=self.PAUSED, dispatched_at=None
            ):
                self.refresh_from_db()
                self.narrate(Action.PAUSED, f"⏸ Paused{who}; the bytes on disk are kept", level="warn")
                return True
            if DownloadJob.objects.filter(
                pk=self.pk, state=self.RUNNING, pause_requested=False, cancel_requested=False
            ).update(pause_requested=True):
                self.refresh_from_db()
                self.narrate(Action.PAUSE_REQUESTED, f"Pause requested{who}; stopping…", level="warn")
                return True
        self.refresh_from_db()
        return False

    def paused(self) -> None:
        """The running process stopped for a pause: the job keeps its partial files."""
        with transaction.atomic():
            if DownloadJob.objects.filter(pk=self.pk, state=self.RUNNING, process=self.process).update(
                state=self.PAUSED, process="", speed_bps=None, heartbeat_at=None, pause_requested=False
            ):
                self.refresh_from_db()
                self.narrate(
                    Action.PAUSED, f"⏸ Paused with {human_bytes(self.bytes_done)} on disk; resume to go on", level="warn"
                )
                transaction.on_commit(partial(DownloadJob.dispatch, self.hive))

    def resume(self, by: Any = None) -> bool:
        """A paused job goes back to its hive's queue; returns False unless it was paused."""
        with transaction.atomic():
            if not DownloadJob.objects.filter(pk=self.pk, state=self.PAUSED).update(
                state=self.QUEUED, pause_requested=False, dispatched_at=None
            ):
                self.refresh_from_db()
                return False
            self.refresh_from_db()
            self.narrate(
                Action.QUEUED, f"Resumed{f' by {by}' if by else ''}; queued again", fields={"resumed": True}
            )
            transaction.on_commit(partial(DownloadJob.dispatch, self.hive))
        return True

    def prioritize(self, by: Any = None) -> bool:
        """Move a waiting (queued or paused) job to the front of its hive's queue."""
        with transaction.atomic():
            waiting = DownloadJob.objects.filter(hive=self.hive_id, state__in=(self.QUEUED, self.PAUSED))
            top = waiting.exclude(pk=self.pk).aggregate(top=models.Max("priority"))["top"]
            if not waiting.filter(pk=self.pk).update(priority=max(top or 0, self.priority) + 1):
                self.refresh_from_db()
                return False
            self.refresh_from_db()
            self.narrate(
                Action.PRIORITIZED, f"Moved to the front of hive '{self.hive.name}''s queue{f' by {by}' if by else ''}"
            )
            transaction.on_commit(partial(DownloadJob.dispatch, self.hive))
        return True

    def retry(self, by: Any = None) -> bool:
        """Put a failed or cancelled job back in the queue, keeping its history.

        Returns False when the state or the error forbids it, or when another job
        for the same model on the hive is active already.
        """
        if not self.can_retry:
            return False
        try:
            with transaction.atomic():
                updated = DownloadJob.objects.filter(pk=self.pk, state__in=(self.FAILED, self.CANCELLED)).update(
                    state=self.QUEUED,
                    cancel_requested=False,
                    error="",
                    error_kind="",
                    finished_at=None,
                    process="",
                    speed_bps=None,
                    dispatched_at=None,
                )
                if updated:
                    self.refresh_from_db()
                    self.narrate(
                        Action.QUEUED, f"Retry requested{f' by {by}' if by else ''}; queued again", fields={"retry": True}
                    )
                    transaction.on_commit(partial(DownloadJob.dispatch, self.hive))
        except IntegrityError:
            updated = 0
        self.refresh_from_db()
        return bool(updated)

    @transaction.atomic
    def finish(
        self,
        state: str,
        action: Action,
        human: str,
        *,
        level: str = "info",
        fields: dict[str, Any] | None = None,
        error: str = "",
        error_kind: str = "",
        entry: ModelEntry | None = None,
    ) -> None:
        """The final state and its narration commit together: whoever sees one sees both."""
        self.state, self.error, self.error_kind = state, error, error_kind
        self.finished_at = timezone.now()
        self.speed_bps = None
        self.process = ""
        if entry is not None:
            self.entry = entry
        if state == self.SUCCEEDED and self.bytes_total is not None:
            self.bytes_done = self.bytes_total
        self.save(
            update_fields=[
                "state", "error", "error_kind", "finished_at", "speed_bps", "process", "bytes_done", "entry",
                "updated_at",
            ]
        )
        self.narrate(action, human, level=level, fields=fields)
        transaction.on_commit(partial(DownloadJob.dispatch, self.hive))

    def fail(self, reason: str, kind: str) -> None:
        self.finish(
            self.FAILED,
            Action.FAILED,
            f"❌ Failed to {self.kind} model '{self.display_name}': {reason}",
            level="error",
            fields={"error_kind": kind, "error": reason},
            error=reason,
            error_kind=kind,
        )

    def hand_back(self, human: str, *, requeue: bool = True, action: Action = Action.QUEUED, **fields: Any) -> bool:
        """A process that stops on purpose gives its running job back to the hive's queue.

        The partial files stay for the resume; the next worker of the hive picks the
        job up at once instead of after three missed heartbeats. ``requeue=False``
        when no other worker exists (the embedded server): its next start sends every
        queued job again. Returns False when the job is no longer this process's.
        """
        process = self.process
        with transaction.atomic():
            if not DownloadJob.objects.filter(pk=self.pk, state=self.RUNNING, process=process).update(
                state=self.QUEUED, process="", speed_bps=None, heartbeat_at=None, dispatched_at=None
            ):
                return False
            self.state, self.process, self.speed_bps, self.heartbeat_at = self.QUEUED, "", None, None
            self.narrate(action, human, level="warn", fields={"requeued": True, "process": process, **fields})
            if requeue:
                transaction.on_commit(partial(DownloadJob.dispatch, self.hive))
        return True

    # -- narration --------------------------------------------------------------------

    def next_seq(self) -> int:
        """Allocate the next narration seq under the row lock, so seqs never repeat."""
        DownloadJob.objects.filter(pk=self.pk).update(last_seq=F("last_seq") + 1)
        return DownloadJob.objects.values_list("last_seq", flat=True).get(pk=self.pk)

    def narrate(
        self,
        action: Action,
        human: str,
        *,
        level: str = "info",
        target: str = "",
        fields: dict[str, Any] | None = None,
        actor: str = "provisioner",
    ) -> NarrationEvent:
        """Record one step of the job, then push it live once committed.

        Storing comes first and allocates the seq, so the stored history and the live
        stream share one order: a page replays from the table what it missed.
        """
        with transaction.atomic():
            seq = self.next_seq()
            event = NarrationEvent.objects.create(
                job=self,
                seq=seq,
                actor=actor,
                action=action,
                target=target or self.reference,
                level=level,
                human=human,
                fields=fields or {},
            )
        self.last_seq = seq
        # Pushed once committed, so a page never shows what a reader of the table cannot.
        transaction.on_commit(lambda: push_event(self, event))
        return event


def _plan_total(plan: dict[str, Any]) -> int:
    return sum(int(f["size"]) for f in plan.get("files", []))


class NarrationEvent(models.Model):
    """One human-readable step of a job, after rbee's narration-core.

    Stored first, then pushed, so a page that connects late replays exactly what it
    missed by seq.
    """

    LEVELS = [(lv, lv) for lv in ("debug", "info", "warn", "error")]

    # Catalog events (a delete) of an entry no job downloaded have no job and seq 0.
    job = models.ForeignKey(DownloadJob, null=True, blank=True, on_delete=models.CASCADE, related_name="events")
    seq = models.PositiveIntegerField()
    emitted_at = models.DateTimeField(default=timezone.now)
    actor = models.CharField(max_length=64, default="provisioner")
    action = models.CharField(max_length=64, choices=Action.choices)
    target = models.CharField(max_length=512, blank=True)
    level = models.CharField(max_length=8, choices=LEVELS, default="info")
    human = models.TextField()
    fields = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["job", "seq"]
        constraints = [models.UniqueConstraint(fields=["job", "seq"], name="one_event_per_job_seq")]

    def __str__(self) -> str:
        return f"#{self.job_id}.{self.seq} {self.action}"

    @property
    def is_progress(self) -> bool:
        return self.action == Action.PROGRESS

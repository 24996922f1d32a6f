"""Download jobs and their narration: the durable record of every download.

A job's life cycle lives here, on the model: every state change is a conditional
UPDATE (so two processes never both win one transition) and is narrated in the
same transaction as the change, so whoever sees the state sees its story.
"""

from __future__ import annotations

import os
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
    DELETE = "model_delete"
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
    STATE_CHOICES = [(s, s) for s in (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)]
    ACTIVE_STATES = (QUEUED, RUNNING)
    FINISHED_STATES = (SUCCEEDED, FAILED, CANCELLED)
    # Failures a retry cannot change: the same reference fails the same way again.
    PERMANENT_ERRORS = ("unsupported", "unsafe_path", "not_found")
    RECENT = 50

    reference = models.CharField(max_length=512, help_text="Canonical model reference")
    hive = models.ForeignKey(Hive, on_delete=models.PROTECT, related_name="jobs")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    state = models.CharField(max_length=16, choices=STATE_CHOICES, default=QUEUED, db_index=True)
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
                condition=Q(state__in=("queued", "running")),
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
            Q(created_at__lt=self.created_at) | Q(created_at=self.created_at, pk__lt=self.pk)
        )
        return ahead.count() + 1

    # -- the life cycle ---------------------------------------------------------------

    @classmethod
    def submit(
        cls, reference: str, hive: Hive, user: Any, *, plan: dict[str, Any] | None = None, enqueue: bool = True
    ) -> tuple[DownloadJob, bool]:
        """Queue a download, or return the active job for the same model on the hive.

        Returns (job, created). ``plan`` is what the admin was shown in the preview (a
        plan's JSON): the job downloads exactly that instead of asking the source again.
        ``enqueue=False`` leaves the job in the table for the hive's running worker to
        find (a command that returns at once must not run it in its own process).
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
                    job = cls.objects.create(reference=reference, hive=hive, requested_by=user)
                    if plan is not None and plan.get("reference") == reference:
                        job.plan, job.bytes_total, job.revision = plan, _plan_total(plan), plan.get("revision", "")
                        job.save(update_fields=["plan", "bytes_total", "revision", "updated_at"])
                    job.narrate(
                        Action.QUEUED,
                        f"Queued '{job.display_name}' on hive '{hive.name}'"
                        + ("" if hive.is_online() else f" — hive '{hive.name}' is offline; the job waits for its worker"),
                        fields={"hive": hive.name, "queue_position": job.queue_position()},
                    )
                    transaction.on_commit(partial(push_job_created, job))
                    if enqueue:
                        job.enqueue()
                return job, True
            except IntegrityError:
                continue
        raise RuntimeError(f"could not submit {reference}")  # pragma: no cover - would need 5 lost races

    def enqueue(self) -> None:
        """Hand the job to its hive's queue once the row that describes it is committed."""
        # The task module imports this one: the task is looked up when it is needed.
        from provisioner.tasks import send_to_queue

        job_id, queue = self.pk, self.hive.name
        transaction.on_commit(lambda: send_to_queue(job_id, queue))

    def claim(self, process: str) -> bool:
        """Take a queued job, or a running one whose process is gone, for this process.

        The update is conditional so two processes never run one job.
        """
        now = timezone.now()
        claimed = (
            DownloadJob.objects.filter(pk=self.pk)
            .filter(Q(state=self.QUEUED) | Q(pk__in=DownloadJob.objects.orphaned().values("pk")))
            .update(state=self.RUNNING, process=process, heartbeat_at=now, started_at=self.started_at or now)
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
        if mine.filter(cancel_requested=False).update(heartbeat_at=timezone.now()):
            return "ok"
        return "cancel" if mine.filter(cancel_requested=True).exists() else "lost"

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
            if DownloadJob.objects.filter(pk=self.pk, state=self.QUEUED).update(
                state=self.CANCELLED, cancel_requested=True, finished_at=timezone.now()
            ):
                self.refresh_from_db()
                self.narrate(Action.CANCELLED, f"⏹ Cancelled{who} before it started", level="warn")
                return True
            if DownloadJob.objects.filter(pk=self.pk, state=self.RUNNING, cancel_requested=False).update(
                cancel_requested=True
            ):
                self.refresh_from_db()
                self.narrate(Action.CANCEL_REQUESTED, f"Cancel requested{who}; stopping…", level="warn")
                return True
        self.refresh_from_db()
        return False

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
                )
                if updated:
                    self.refresh_from_db()
                    self.narrate(
                        Action.QUEUED, f"Retry requested{f' by {by}' if by else ''}; queued again", fields={"retry": True}
                    )
                    self.enqueue()
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

    def fail(self, reason: str, kind: str) -> None:
        self.finish(
            self.FAILED,
            Action.FAILED,
            f"❌ Failed to download model '{self.display_name}': {reason}",
            level="error",
            fields={"error_kind": kind, "error": reason},
            error=reason,
            error_kind=kind,
        )

    def hand_back(self, human: str, *, requeue: bool = True, **fields: Any) -> bool:
        """A process that stops on purpose gives its running job back to the hive's queue.

        The partial files stay for the resume; the next worker of the hive picks the
        job up at once instead of after three missed heartbeats. ``requeue=False``
        when no other worker exists (the embedded server): its next start sends every
        queued job again. Returns False when the job is no longer this process's.
        """
        process = self.process
        with transaction.atomic():
            if not DownloadJob.objects.filter(pk=self.pk, state=self.RUNNING, process=process).update(
                state=self.QUEUED, process="", speed_bps=None, heartbeat_at=None
            ):
                return False
            self.state, self.process, self.speed_bps, self.heartbeat_at = self.QUEUED, "", None, None
            self.narrate(Action.QUEUED, human, level="warn", fields={"requeued": True, "process": process, **fields})
            if requeue:
                self.enqueue()
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

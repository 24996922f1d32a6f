from __future__ import annotations

import os
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, models, transaction
from django.db.models import F, Q
from django.utils import timezone

from catalog.models import Hive, ModelEntry


class DownloadJobQuerySet(models.QuerySet["DownloadJob"]):
    def active(self) -> DownloadJobQuerySet:
        return self.filter(state__in=DownloadJob.ACTIVE_STATES)


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

    reference = models.CharField(max_length=512, help_text="Canonical model reference")
    hive = models.ForeignKey(Hive, on_delete=models.PROTECT, related_name="jobs")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    state = models.CharField(max_length=16, choices=STATE_CHOICES, default=QUEUED, db_index=True)
    vendor = models.CharField(max_length=32, blank=True)
    bytes_done = models.BigIntegerField(default=0)
    bytes_total = models.BigIntegerField(null=True, blank=True)
    speed_bps = models.FloatField(null=True, blank=True)
    plan = models.JSONField(null=True, blank=True, help_text="Files, sizes and revision, fixed before the first byte")
    revision = models.CharField(max_length=128, blank=True)
    error = models.TextField(blank=True)
    error_kind = models.CharField(max_length=32, blank=True)
    entry = models.ForeignKey(ModelEntry, null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs")
    cancel_requested = models.BooleanField(default=False)
    worker = models.CharField(max_length=128, blank=True, help_text="Process running it now")
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    event_seq = models.PositiveIntegerField(default=0, help_text="Seq of the last narration event")
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
        return f"/jobs/{self.pk}/"

    @property
    def is_active(self) -> bool:
        return self.state in self.ACTIVE_STATES

    @property
    def is_finished(self) -> bool:
        return self.state in self.FINISHED_STATES

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
        from provisioner.references import UnsupportedReference, parse_reference

        try:
            return parse_reference(self.reference).display_name
        except UnsupportedReference:
            return self.reference

    @property
    def partial_dir(self):  # type: ignore[no-untyped-def]
        from pathlib import Path

        return Path(self.hive.models_dir or settings.RBEE_MODELS_DIR) / ".partial" / str(self.pk)

    def queue_position(self) -> int | None:
        """Place in this hive's queue, so an admin knows why nothing moves yet."""
        if self.state != self.QUEUED:
            return None
        ahead = DownloadJob.objects.filter(hive=self.hive_id, state=self.QUEUED).filter(
            Q(created_at__lt=self.created_at) | Q(created_at=self.created_at, pk__lt=self.pk)
        )
        return ahead.count() + 1

    @classmethod
    def submit(cls, reference: str, hive: Hive, user: models.Model | None) -> tuple[DownloadJob, bool]:
        """Create a queued job, or return the active one for the same model on the hive.

        Returns (job, created). Concurrent identical submissions race on the partial
        unique index; the loser reads the winner's row.
        """
        for _ in range(5):
            existing = cls.objects.active().filter(hive=hive, reference=reference).first()
            if existing:
                return existing, False
            try:
                with transaction.atomic():
                    job = cls.objects.create(reference=reference, hive=hive, requested_by=user)
                return job, True
            except IntegrityError:
                continue
        raise RuntimeError(f"could not submit {reference}")  # pragma: no cover - would need 5 lost races

    def claim(self, worker: str) -> bool:
        """Take a queued job, or a running one whose worker is gone, for this process.

        The update is conditional so two workers never run one job.
        """
        stale = timezone.now() - timedelta(seconds=settings.RBEE_HEARTBEAT_S * 3)
        now = timezone.now()
        claimed = (
            DownloadJob.objects.filter(pk=self.pk)
            .filter(
                Q(state=self.QUEUED)
                | Q(state=self.RUNNING, heartbeat_at__lt=stale)
                | Q(state=self.RUNNING, heartbeat_at__isnull=True)
            )
            .update(state=self.RUNNING, worker=worker, heartbeat_at=now, started_at=self.started_at or now)
        )
        if claimed:
            self.refresh_from_db()
        return bool(claimed)

    def request_cancel(self) -> bool:
        """Ask the worker to stop; a queued job is cancelled on the spot.

        Returns False for a finished job: cancelling it changes nothing.
        """
        if DownloadJob.objects.filter(pk=self.pk, state=self.QUEUED).update(
            state=self.CANCELLED, cancel_requested=True, finished_at=timezone.now()
        ):
            self.refresh_from_db()
            return True
        updated = DownloadJob.objects.filter(pk=self.pk, state=self.RUNNING).update(cancel_requested=True)
        self.refresh_from_db()
        return bool(updated)

    def reset_for_retry(self) -> bool:
        """Put a failed or cancelled job back in the queue, keeping its history."""
        try:
            with transaction.atomic():
                updated = DownloadJob.objects.filter(pk=self.pk, state__in=(self.FAILED, self.CANCELLED)).update(
                    state=self.QUEUED,
                    cancel_requested=False,
                    error="",
                    error_kind="",
                    finished_at=None,
                    worker="",
                    speed_bps=None,
                )
        except IntegrityError:
            return False  # another job for the same model is active already
        self.refresh_from_db()
        return bool(updated)

    def next_seq(self) -> int:
        """Allocate the next narration seq under the row lock, so seqs never repeat."""
        DownloadJob.objects.filter(pk=self.pk).update(event_seq=F("event_seq") + 1)
        return DownloadJob.objects.values_list("event_seq", flat=True).get(pk=self.pk)


def worker_id() -> str:
    import socket

    return f"{socket.gethostname()}:{os.getpid()}"


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
    action = models.CharField(max_length=64)
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
        return self.action == "model_download_progress"

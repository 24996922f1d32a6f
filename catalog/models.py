from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path
from typing import ClassVar, NamedTuple

from django.conf import settings
from django.db import IntegrityError, models, transaction
from django.urls import reverse
from django.utils import timezone

logger = logging.getLogger(__name__)


class Hive(models.Model):
    """A machine whose disk holds a model catalog.

    The embedded default has one, ``local``: the machine the dashboard runs on. In the
    scaled deployment each hive worker registers its hive and heartbeats it, so the
    dashboard can tell which hives can take work right now.
    """

    # Also the name of the hive's task queue, which django-tasks-db keeps in 32 characters.
    name = models.SlugField(max_length=32, unique=True)
    models_dir = models.CharField(max_length=1024, blank=True)
    last_heartbeat = models.DateTimeField(null=True, blank=True)
    disk_total = models.BigIntegerField(null=True, blank=True)
    disk_free = models.BigIntegerField(null=True, blank=True)
    # Where the hive's worker serves its verified files to the other hives (RBEE_PEER_URL);
    # blank: it serves none (the embedded default).
    peer_url = models.CharField(max_length=512, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    # The hive this process stands for, once it registered one (a hive worker, or the
    # embedded server at start); otherwise RBEE_HIVE.
    _current_name: ClassVar[str | None] = None

    @classmethod
    def register(cls, name: str, models_dir: Path, *, current: bool = False) -> Hive:
        """Create the hive, or move it to ``models_dir``; the one place a hive's disk is set.

        Entries keep the paths and the models root they were installed into, so a
        moved models dir loses none of them. ``current``: this process stands for
        the hive from now on (it runs the hive's jobs and sees its disk).
        """
        models_dir = Path(models_dir).expanduser().resolve()
        hive, created = cls.objects.get_or_create(name=name, defaults={"models_dir": str(models_dir)})
        if not created and hive.models_dir != str(models_dir):
            logger.warning("hive %s moves its models dir from %s to %s", name, hive.models_dir or "-", models_dir)
            hive.models_dir = str(models_dir)
            hive.save(update_fields=["models_dir"])
        if current:
            cls._current_name = name
        return hive

    @classmethod
    def current_name(cls) -> str:
        return cls._current_name or settings.RBEE_HIVE

    @classmethod
    def current(cls) -> Hive:
        """The hive this process stands for, created on first use."""
        hive, _ = cls.objects.get_or_create(
            name=cls.current_name(), defaults={"models_dir": str(settings.RBEE_MODELS_DIR)}
        )
        return hive

    @classmethod
    def default(cls) -> Hive:
        """Where a job goes when the admin names no hive.

        Embedded: the local hive. Scaled: an online hive (the web process has no disk
        of its own to download to), else any hive, so the job waits and says why.
        """
        if not settings.RBEE_SCALED:
            return cls.current()
        hives = list(cls.objects.all())
        online = [h for h in hives if h.is_online()]
        if online or hives:
            return (online or hives)[0]
        return cls.current()

    def is_online(self) -> bool:
        """Embedded: the web process is the worker, so the local hive is always up.

        Scaled: a hive is up while its worker heartbeats; three missed beats and new
        jobs for it wait instead of pretending to run.
        """
        if self.is_here():
            return True
        if self.last_heartbeat is None:
            return False
        limit = timedelta(seconds=settings.RBEE_HEARTBEAT_S * 3)
        return timezone.now() - self.last_heartbeat < limit

    @property
    def path(self) -> Path:
        return Path(self.models_dir or settings.RBEE_MODELS_DIR)

    def is_here(self) -> bool:
        """This process sees the hive's disk: the embedded server's hive, or the hive a
        scaled worker registered as its own (the scaled web process sees no disk)."""
        if self.name != self.current_name():
            return False
        return not settings.RBEE_SCALED or self._current_name is not None

    def disk_space(self) -> tuple[int | None, int | None]:
        """(total, free) bytes of the hive's models volume: measured when the disk is
        here, else as the hive's worker last reported it."""
        if self.is_here():
            self.path.mkdir(parents=True, exist_ok=True)
            usage = shutil.disk_usage(self.path)
            return usage.total, usage.free
        return self.disk_total, self.disk_free

    def usable_bytes(self) -> int | None:
        """Free space a download may use: free minus RBEE_DISK_RESERVE."""
        _total, free = self.disk_space()
        return None if free is None else max(0, free - settings.RBEE_DISK_RESERVE)

    def partial_bytes(self) -> int | None:
        """Disk taken by unfinished downloads, when the disk is here to look at."""
        if not self.is_here():
            return None
        total = 0
        for root, _dirs, files in os.walk(self.path / ".partial"):
            for name in files:
                try:
                    total += os.lstat(os.path.join(root, name)).st_size
                except OSError:
                    continue
        return total

    def beat(self, *, peer_url: str | None = None) -> None:
        """Record that this hive's worker is alive, with the free space on its disk and,
        when it serves peers, where."""
        self.path.mkdir(parents=True, exist_ok=True)
        usage = shutil.disk_usage(self.path)
        self.last_heartbeat = timezone.now()
        self.disk_total, self.disk_free = usage.total, usage.free
        fields = ["last_heartbeat", "disk_total", "disk_free"]
        if peer_url is not None:
            self.peer_url = peer_url
            fields.append("peer_url")
        self.save(update_fields=fields)


class FileRecord(NamedTuple):
    """One verified file of a new entry, relative to the entry's folder."""

    path: str
    size_bytes: int
    sha256: str
    media_type: str = ""


class ModelEntryQuerySet(models.QuerySet["ModelEntry"]):
    def create_from_plan(
        self,
        *,
        hive: Hive,
        reference: str,
        name: str,
        vendor: str,
        revision: str,
        path: Path,
        models_root: Path,
        files: Iterable[FileRecord],
        linked: bool = False,
    ) -> ModelEntry:
        """The entry and its files in one transaction: an entry never lacks its file list."""
        files = list(files)
        with transaction.atomic():
            entry = self.create(
                hive=hive,
                reference=reference,
                name=name,
                vendor=vendor,
                revision=revision,
                path=str(path),
                models_root=str(models_root),
                size_bytes=sum(f.size_bytes for f in files),
                file_count=len(files),
                linked=linked,
            )
            ModelFile.objects.bulk_create(
                ModelFile(entry=entry, path=f.path, size_bytes=f.size_bytes, sha256=f.sha256, media_type=f.media_type)
                for f in files
            )
        return entry

    def check_files(self) -> None:
        for entry in self.select_related("hive"):
            entry.check_files()

    def search(self, query: str) -> ModelEntryQuerySet:
        if not query:
            return self
        return self.filter(
            models.Q(name__icontains=query)
            | models.Q(reference__icontains=query)
            | models.Q(tags__icontains=query)
            | models.Q(notes__icontains=query)
        )


class ModelEntry(models.Model):
    """A model that is complete on a hive's disk and can be loaded by workers.

    An entry is written last, after every file was verified and moved into place, so
    its existence is the promise that the files are whole.
    """

    STATUS_READY = "ready"
    STATUS_MISSING = "missing"
    STATUS_CHOICES = [(STATUS_READY, "ready"), (STATUS_MISSING, "files missing")]

    hive = models.ForeignKey(Hive, on_delete=models.PROTECT, related_name="entries")
    reference = models.CharField(max_length=512, help_text="Canonical model reference")
    name = models.CharField(max_length=256)
    vendor = models.CharField(max_length=32)
    revision = models.CharField(max_length=128, blank=True)
    path = models.CharField(max_length=1024)
    # The models dir the entry was installed into: deletes stay inside it even after
    # RBEE_MODELS_DIR (and so the hive's models dir) moves.
    models_root = models.CharField(max_length=1024, blank=True)
    size_bytes = models.BigIntegerField(default=0)
    file_count = models.PositiveIntegerField(default=0)
    linked = models.BooleanField(default=False, help_text="Files are hard links to the source")
    status = models.CharField(max_length=16, choices=STATUS_CHOICES, default=STATUS_READY)
    notes = models.TextField(blank=True)
    tags = models.CharField(max_length=256, blank=True, help_text="Comma-separated")
    last_used_at = models.DateTimeField(null=True, blank=True, help_text="When rbee last asked for it (ensure)")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ModelEntryQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "model entry"
        verbose_name_plural = "model entries"
        constraints = [
            models.UniqueConstraint(fields=["hive", "reference"], name="one_entry_per_hive_reference")
        ]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("model_detail", args=[self.pk])

    def mark_used(self) -> None:
        """rbee is about to load it: eviction keeps the recently used."""
        self.last_used_at = timezone.now()
        ModelEntry.objects.filter(pk=self.pk).update(last_used_at=self.last_used_at)

    @property
    def tag_list(self) -> list[str]:
        return [t.strip() for t in self.tags.split(",") if t.strip()]

    def check_files(self) -> str:
        """Look at the disk (where this process sees it): every file there at its size is
        ``ready``, anything less is ``missing``. Returns the status, saved if it changed."""
        if not self.hive.is_here():
            return self.status
        folder = Path(self.path)
        try:
            whole = folder.is_dir() and all(
                (folder / f.path).stat().st_size == f.size_bytes for f in self.files.all()
            )
        except OSError:
            whole = False
        status = self.STATUS_READY if whole else self.STATUS_MISSING
        if status != self.status:
            self.status = status
            self.save(update_fields=["status", "updated_at"])
        return status

    def replace_files(self, *, revision: str, path: Path, models_root: Path, files: Iterable[FileRecord]) -> None:
        """A fresh download of the same reference takes the entry's place (same id)."""
        files = list(files)
        with transaction.atomic():
            self.files.all().delete()
            self.revision, self.path, self.models_root = revision, str(path), str(models_root)
            self.size_bytes, self.file_count = sum(f.size_bytes for f in files), len(files)
            self.status = self.STATUS_READY
            self.save(
                update_fields=["revision", "path", "models_root", "size_bytes", "file_count", "status", "updated_at"]
            )
            ModelFile.objects.bulk_create(
                ModelFile(entry=self, path=f.path, size_bytes=f.size_bytes, sha256=f.sha256, media_type=f.media_type)
                for f in files
            )

    @property
    def root(self) -> Path:
        return Path(self.models_root or self.hive.path)

    def delete_files(self) -> None:
        """Remove the entry's folder, and only that.

        Refused when the folder is not strictly inside a vendor's area of the models
        root it was installed into, or when another entry's folder is the same, inside
        it or around it: a delete never takes another entry's files.
        """
        root = self.root.resolve()
        folder = Path(self.path).resolve()
        if not folder.is_relative_to(root) or len(folder.relative_to(root).parts) < 2:
            raise ValueError(f"{folder} is not inside a vendor's area of the models dir {root}")
        # Same disk: the same hive, or another hive whose models dir is the same folder.
        neighbours = ModelEntry.objects.filter(models.Q(hive=self.hive_id) | models.Q(models_root=str(root)))
        for other in neighbours.exclude(pk=self.pk).values_list("path", flat=True):
            other_path = Path(other).resolve()
            if other_path.is_relative_to(folder) or folder.is_relative_to(other_path):
                raise ValueError(f"{folder} is shared with another entry's folder {other_path}")
        if folder.is_dir():
            shutil.rmtree(folder)
        # Empty parents (org folders) go too, up to the vendor folder.
        parent = folder.parent
        while parent != root and parent.parent != root and parent.is_relative_to(root):
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent


class ModelFile(models.Model):
    entry = models.ForeignKey(ModelEntry, on_delete=models.CASCADE, related_name="files")
    path = models.CharField(max_length=1024, help_text="Relative to the entry's folder")
    size_bytes = models.BigIntegerField()
    sha256 = models.CharField(max_length=64, blank=True)
    media_type = models.CharField(max_length=128, blank=True)

    class Meta:
        ordering = ["path"]
        constraints = [models.UniqueConstraint(fields=["entry", "path"], name="one_row_per_file")]

    def __str__(self) -> str:
        return self.path


class FleetSecret(models.Model):
    """The key hives sign peer requests with, when RBEE_FLEET_SECRET does not give one.

    Kept in the database every hive already shares, so a fleet needs no extra setup;
    one row, created by whichever process needs it first.
    """

    key = models.CharField(max_length=128)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return "fleet secret"  # never the key itself

    @classmethod
    def get(cls) -> str:
        """The fleet's secret: the setting, else the stored one, else a new one stored.

        Concurrent first uses race on the primary key; the loser reads the winner's row.
        """
        if settings.RBEE_FLEET_SECRET:
            return str(settings.RBEE_FLEET_SECRET)
        import secrets

        row = cls.objects.filter(pk=1).first()
        if row is None:
            try:
                with transaction.atomic():
                    row = cls.objects.create(pk=1, key=secrets.token_hex(32))
            except IntegrityError:
                row = cls.objects.get(pk=1)
        return row.key

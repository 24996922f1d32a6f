from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import ClassVar, NamedTuple

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import IntegrityError, models, transaction
from django.db.models.functions import Coalesce
from django.urls import reverse
from django.utils import timezone

from catalog.windows import DownloadWindow, InvalidWindow

logger = logging.getLogger(__name__)

# A peer read stamps its entry at least this often; a fresher stamp means "being read".
SERVED_FRESH_S = 30.0
# The embedded pool has this many threads; no hive may ask for more at once.
MAX_CONCURRENT_DOWNLOADS = 32


def local_now() -> datetime:
    """Now, in the server's time zone, shifted by RBEE_CLOCK_SHIFT_S (tests move it)."""
    return timezone.localtime() + timedelta(seconds=settings.RBEE_CLOCK_SHIFT_S)


def default_max_concurrent_downloads() -> int:
    """RBEE_MAX_CONCURRENT_DOWNLOADS is what a new hive starts with."""
    return min(settings.RBEE_MAX_CONCURRENT_DOWNLOADS, MAX_CONCURRENT_DOWNLOADS)


def validate_window(text: str) -> None:
    try:
        DownloadWindow.parse(text)
    except InvalidWindow as exc:
        raise ValidationError(str(exc)) from None


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
    # Limits, changeable while jobs run: the hive's processes read them every second.
    max_bytes_per_s = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="Total download rate over all of the hive's jobs; empty: unlimited"
    )
    max_concurrent_downloads = models.PositiveSmallIntegerField(
        default=default_max_concurrent_downloads,
        validators=[MinValueValidator(1), MaxValueValidator(MAX_CONCURRENT_DOWNLOADS)],
    )
    download_window = models.CharField(
        max_length=16,
        blank=True,
        validators=[validate_window],
        help_text="HH:MM-HH:MM in the server's time zone, may cross midnight; empty: always",
    )
    # Past the high mark a download first evicts idle, unpinned entries down to the low mark.
    high_watermark_percent = models.PositiveSmallIntegerField(
        default=90, validators=[MinValueValidator(1), MaxValueValidator(100)]
    )
    low_watermark_percent = models.PositiveSmallIntegerField(
        default=80, validators=[MinValueValidator(0), MaxValueValidator(99)]
    )
    # Hub endpoints for this hive, tried in order (a mirror near it, then the Hub);
    # empty: RBEE_HF_ENDPOINTS.
    hf_endpoints = models.JSONField(default=list, blank=True, help_text="Hugging Face endpoints tried in order")
    # As its worker last reported them: [{"name": "NVIDIA L4", "memory_mib": 23034}, …].
    gpus = models.JSONField(default=list, blank=True)
    # Where the hive's worker serves its verified files to the other hives (RBEE_PEER_URL);
    # blank: it serves none (the embedded default).
    peer_url = models.CharField(max_length=512, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            # Evicting "down to" a mark above the one that triggered it would never stop.
            models.CheckConstraint(
                condition=models.Q(low_watermark_percent__lt=models.F("high_watermark_percent"))
                & models.Q(high_watermark_percent__lte=100),
                name="low_watermark_below_high",
            )
        ]

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
    def window(self) -> DownloadWindow | None:
        return DownloadWindow.parse(self.download_window) if self.download_window else None

    def window_open(self) -> bool:
        """Whether downloads may run now. The clock can be shifted (RBEE_CLOCK_SHIFT_S) so
        window edges are tested without waiting for them."""
        window = self.window
        return window is None or window.contains(local_now())

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

    def usage(self) -> DiskUsage:
        """What the hive's disk holds: capacity, free, the catalog (shared bytes counted
        once), partial downloads, what dedupe saved, and the entries worth a look."""
        total, free = self.disk_space()
        entries = list(self.entries.prefetch_related("files"))
        catalog = saved = None
        if self.is_here():
            inodes: dict[tuple[int, int], int] = {}
            names = 0
            for entry in entries:
                for inode, size, _links in entry.file_inodes():
                    inodes[inode] = size
                    names += size
            catalog = sum(inodes.values())
            saved = names - catalog
        else:
            catalog = sum(e.size_bytes for e in entries)
        by_idle = sorted(entries, key=lambda e: e.idle_since)
        return DiskUsage(
            total=total,
            free=free,
            catalog=catalog,
            partial=self.partial_bytes(),
            dedupe_saved=saved,
            largest=sorted(entries, key=lambda e: -e.size_bytes)[:5],
            least_recently_used=by_idle[:5],
        )

    def eviction_plan(self, needed: int, *, keep: Iterable[int] = ()) -> EvictionPlan:
        """Which entries a download of ``needed`` bytes would evict, least recently used
        first, and whether it then fits.

        Past the high watermark the disk is brought down to the low one; a download
        that does not fit in the usable space at all needs at least that much freed.
        Pinned entries, entries used within RBEE_EVICT_MIN_IDLE_S, entries another hive
        is reading from and ``keep`` (the entry being replaced) are never evicted. Bytes
        another name still links to free nothing, so hard-linked files count once: only
        when the last of their names goes.
        """
        total, free = self.disk_space()
        if total is None or free is None:
            return EvictionPlan(needed=needed, to_free=0, victims=[], freed=0, fits=True, blocking=[])
        usable = max(0, free - settings.RBEE_DISK_RESERVE)
        used_after = total - free + needed
        high = total * self.high_watermark_percent // 100
        low = total * self.low_watermark_percent // 100
        to_free = max(used_after - low if used_after > high else 0, needed - usable)
        if to_free <= 0:
            return EvictionPlan(needed=needed, to_free=0, victims=[], freed=0, fits=True, blocking=[])
        idle_before = timezone.now() - timedelta(seconds=settings.RBEE_EVICT_MIN_IDLE_S)
        keep = set(keep)
        victims: list[ModelEntry] = []
        blocking: list[tuple[ModelEntry, str]] = []
        names_gone: dict[tuple[int, int], int] = {}
        freed = 0
        for entry in self.entries.by_idleness().prefetch_related("files"):
            if entry.pk in keep:
                continue
            if entry.pinned:
                blocking.append((entry, "pinned"))
            elif entry.idle_since > idle_before:
                blocking.append((entry, "used recently"))
            elif entry.is_being_served():
                blocking.append((entry, "being read by another hive"))
            elif freed < to_free:
                victims.append(entry)
                if not self.is_here():
                    freed += entry.size_bytes  # as far as the web process can tell from afar
                for inode, size, links in entry.file_inodes():
                    names_gone[inode] = names_gone.get(inode, 0) + 1
                    if names_gone[inode] >= links:
                        freed += size
        fits = needed <= usable + freed and used_after - freed <= high
        return EvictionPlan(needed=needed, to_free=to_free, victims=victims, freed=freed, fits=fits, blocking=blocking)

    def hf_endpoint_list(self) -> list[str]:
        """The Hub endpoints this hive downloads from, in the order they are tried."""
        listed = self.hf_endpoints if isinstance(self.hf_endpoints, list) else []
        return [str(e).strip().rstrip("/") for e in listed if str(e).strip()] or (
            list(settings.RBEE_HF_ENDPOINTS) or [settings.HF_ENDPOINT]
        )

    def vram_bytes(self) -> int:
        """The memory of all its GPUs together: a model split across them fits in the sum."""
        return sum(int(g.get("memory_mib", 0)) for g in self.gpus or [] if isinstance(g, dict)) * 1024 * 1024

    def beat(self, *, gpus: list[dict[str, object]] | None = None, peer_url: str | None = None) -> None:
        """Record that this hive's worker is alive, with the free space on its disk, its
        GPUs when the worker looked them up, and where it serves peers when it does."""
        self.path.mkdir(parents=True, exist_ok=True)
        usage = shutil.disk_usage(self.path)
        self.last_heartbeat = timezone.now()
        self.disk_total, self.disk_free = usage.total, usage.free
        fields = ["last_heartbeat", "disk_total", "disk_free"]
        if gpus is not None:
            self.gpus = gpus
            fields.append("gpus")
        if peer_url is not None:
            self.peer_url = peer_url
            fields.append("peer_url")
        self.save(update_fields=fields)


class DiskUsage(NamedTuple):
    """A hive's disk at a glance; byte counts are None where this process cannot look."""

    total: int | None
    free: int | None
    catalog: int | None
    partial: int | None
    dedupe_saved: int | None
    largest: list[ModelEntry]
    least_recently_used: list[ModelEntry]


class EvictionPlan(NamedTuple):
    """What making room for ``needed`` bytes would take; nothing is removed by making one."""

    needed: int
    to_free: int
    victims: list[ModelEntry]
    freed: int
    fits: bool
    blocking: list[tuple[ModelEntry, str]]

    def blocking_text(self) -> str:
        return ", ".join(f"{entry.name} ({why})" for entry, why in self.blocking) or "no entries"


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
        metadata: dict[str, object] | None = None,
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
                # Every file was verified on its way in, and the revision is the source's current one.
                integrity=ModelEntry.INTEGRITY_OK,
                verified_at=timezone.now(),
                update_checked_at=timezone.now(),
                metadata=metadata or {},
            )
            ModelFile.objects.bulk_create(
                ModelFile(entry=entry, path=f.path, size_bytes=f.size_bytes, sha256=f.sha256, media_type=f.media_type)
                for f in files
            )
        return entry

    def check_files(self) -> None:
        for entry in self.select_related("hive"):
            entry.check_files()

    def by_idleness(self) -> ModelEntryQuerySet:
        """Least recently used first; an entry never used counts from when it arrived."""
        return self.alias(idle_since=Coalesce("last_used_at", "created_at")).order_by("idle_since", "pk")

    def update_available(self) -> ModelEntryQuerySet:
        return self.exclude(update_revision="")

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
    INTEGRITY_UNKNOWN = "unknown"
    INTEGRITY_OK = "ok"
    INTEGRITY_DAMAGED = "damaged"
    INTEGRITY_MISSING = "missing"
    INTEGRITY_CHOICES = [
        (INTEGRITY_UNKNOWN, "not verified"),
        (INTEGRITY_OK, "ok"),
        (INTEGRITY_DAMAGED, "damaged"),
        (INTEGRITY_MISSING, "files missing"),
    ]

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
    pinned = models.BooleanField(default=False, help_text="Never evicted to make room, nor deleted without force")
    last_used_at = models.DateTimeField(null=True, blank=True, help_text="When rbee last asked for it")
    # Stamped by the hive's peer server while another hive reads the files: never evicted then.
    served_at = models.DateTimeField(null=True, blank=True, editable=False)
    integrity = models.CharField(max_length=16, choices=INTEGRITY_CHOICES, default=INTEGRITY_UNKNOWN)
    damaged_files = models.JSONField(default=list, blank=True, help_text="Files that failed the last verify")
    verified_at = models.DateTimeField(null=True, blank=True)
    # A reference that follows a branch or tag: where the source has moved to, and what changed.
    update_revision = models.CharField(max_length=128, blank=True)
    update_changes = models.JSONField(default=dict, blank=True)
    update_checked_at = models.DateTimeField(null=True, blank=True)
    previous_revision = models.CharField(max_length=128, blank=True)
    # What the plan read from the files' headers and config (architecture, parameters,
    # context, quant…), kept so the entry says what it is without opening the weights.
    metadata = models.JSONField(default=dict, blank=True)
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

    @property
    def idle_since(self) -> datetime:
        return self.last_used_at or self.created_at

    @property
    def update_available(self) -> bool:
        return bool(self.update_revision)

    def is_being_served(self) -> bool:
        """Whether another hive is reading this entry's files from this one right now.

        Eviction skips such an entry. The peer server stamps ``served_at`` while it sends
        (at least every ``SERVED_FRESH_S / 3``), so a stamp this fresh is a read in flight.
        """
        return self.served_at is not None and timezone.now() - self.served_at < timedelta(seconds=SERVED_FRESH_S)

    def mark_served(self) -> None:
        ModelEntry.objects.filter(pk=self.pk).update(served_at=timezone.now())

    def file_inodes(self) -> list[tuple[tuple[int, int], int, int]]:
        """(inode, size, link count) of every file present, where this process sees the disk.

        Hard links (dedupe, imports) share an inode: counting by inode counts shared
        bytes once, and a file's bytes are freed only with the last of its names.
        """
        if not self.hive.is_here():
            return []
        folder = Path(self.path)
        found = []
        for f in self.files.all():
            try:
                st = os.stat(folder / f.path)
            except OSError:
                continue
            found.append(((st.st_dev, st.st_ino), st.st_size, st.st_nlink))
        return found

    def bytes_on_disk(self) -> int | None:
        """Bytes of the entry's files present on disk, shared ones included; None when
        the disk is elsewhere."""
        if not self.hive.is_here():
            return None
        return sum(size for _inode, size, _links in self.file_inodes())

    def record_integrity(self, damaged: list[str], missing: list[str]) -> None:
        """The result of re-hashing every file, saved at once."""
        if missing:
            self.integrity = self.INTEGRITY_MISSING
        elif damaged:
            self.integrity = self.INTEGRITY_DAMAGED
        else:
            self.integrity = self.INTEGRITY_OK
        self.damaged_files = sorted(damaged + missing)
        self.verified_at = timezone.now()
        self.save(update_fields=["integrity", "damaged_files", "verified_at", "updated_at"])

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
            self.integrity, self.damaged_files, self.verified_at = self.INTEGRITY_OK, [], timezone.now()
            self.update_checked_at = self.verified_at
            self.save(
                update_fields=[
                    "revision", "path", "models_root", "size_bytes", "file_count", "status", "integrity",
                    "damaged_files", "verified_at", "update_checked_at", "updated_at",
                ]
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

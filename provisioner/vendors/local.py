"""Local files and folders (``file:/abs/path``), imported from the admin-approved roots.

The dashboard runs with access to the whole disk of its machine, so an import is
only allowed from folders the operator listed in ``RBEE_IMPORT_ROOTS``, and the
check is made on real paths (symlinks resolved) for the imported path *and* for
every file below it: a link inside a root that points at ``/etc`` is refused, and
nothing outside the roots is ever opened.

Revision: always the empty string. A local path has no version identity the way a
commit or a manifest digest does; an mtime changes on ``touch`` and survives a
copy, so it would suggest an identity it does not have. The sha256 of every file,
which the import computes, is the content's real identity and is recorded per file.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings

from provisioner import metadata
from provisioner.references import FileRef, Reference
from provisioner.vendors.base import (
    Cancelled,
    CancelToken,
    DiskFull,
    DownloadError,
    FetchResult,
    NotFound,
    Plan,
    PlannedFile,
    Progress,
    UnsafePath,
    VerificationError,
    inside,
    safe_relative_path,
)

CHUNK = 8 * 1024 * 1024


@dataclass(frozen=True)
class _Source:
    relative: str
    real: str
    size: int
    device: int


def import_roots() -> list[str]:
    """RBEE_IMPORT_ROOTS as real paths."""
    return [os.path.realpath(os.fspath(r)) for r in settings.RBEE_IMPORT_ROOTS or []]


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _models_dir_device() -> int:
    """The device of the models dir (or of its nearest existing parent, before first use)."""
    path = Path(settings.RBEE_MODELS_DIR).resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path.stat().st_dev


class LocalVendor:
    name = "local"
    label = "Local file or folder"

    def supports(self, ref: Reference) -> bool:
        return isinstance(ref, FileRef)

    def validate(self, ref: Reference) -> None:
        """Cheap checks at submit time, so a bad path is refused on the form."""
        assert isinstance(ref, FileRef)
        self._resolve(ref.path)

    def _resolve(self, path: str) -> tuple[str, os.stat_result]:
        """The real path of an import, refused unless it is inside a root and exists.

        The roots are checked before existence so the answer for a path outside
        them says nothing about what exists there.
        """
        roots = import_roots()
        if not roots:
            raise DownloadError(
                "file: imports are disabled: set RBEE_IMPORT_ROOTS to the folders models may be imported from",
                kind="import_disabled",
            )
        real = os.path.realpath(path)
        if not any(_within(real, root) for root in roots):
            shown = path if real == path else f"{path} (which resolves to {real})"
            raise UnsafePath(
                f"{shown} is outside the import roots ({', '.join(roots)}); "
                "only paths below RBEE_IMPORT_ROOTS can be imported",
                kind="outside_import_roots",
            )
        try:
            st = os.stat(real)
        except FileNotFoundError:
            raise NotFound(f"{path} does not exist") from None
        except OSError as exc:
            raise DownloadError(f"{path} cannot be read: {exc.strerror}") from None
        models = os.path.realpath(settings.RBEE_MODELS_DIR)
        if _within(real, models) or _within(models, real):
            raise UnsafePath(
                f"{path} overlaps the models dir {models}; import from somewhere else", kind="outside_import_roots"
            )
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
            raise DownloadError(f"{path} is not a regular file or a folder", kind="not_a_file")
        return real, st

    def _sources(self, path: str) -> list[_Source]:
        """Every regular file of the import, each checked to be inside the roots."""
        real, st = self._resolve(path)
        if stat.S_ISREG(st.st_mode):
            name = safe_relative_path(os.path.basename(path) or "file")
            return [_Source(name, real, st.st_size, st.st_dev)]
        roots = import_roots()
        found: list[_Source] = []
        self._walk(real, "", roots, {real}, found)
        if not found:
            raise NotFound(f"{path} is an empty folder: nothing to import")
        return sorted(found, key=lambda s: s.relative)

    def _walk(self, folder: str, prefix: str, roots: list[str], visiting: set[str], found: list[_Source]) -> None:
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            raise DownloadError(f"cannot list {folder}: {exc.strerror}") from None
        for entry in entries:
            relative = safe_relative_path(f"{prefix}{entry.name}")
            real = os.path.realpath(entry.path)
            if not any(_within(real, root) for root in roots):
                raise UnsafePath(
                    f"{entry.path} is a link to {real}, which is outside the import roots ({', '.join(roots)})",
                    kind="outside_import_roots",
                )
            try:
                st = os.stat(real)
            except OSError:
                raise NotFound(f"{entry.path} is a broken link") from None
            if stat.S_ISDIR(st.st_mode):
                if real in visiting:
                    raise DownloadError(f"{entry.path} links back to a folder above it (a loop)", kind="not_a_file")
                self._walk(real, relative + "/", roots, visiting | {real}, found)
            elif stat.S_ISREG(st.st_mode):
                found.append(_Source(relative, real, st.st_size, st.st_dev))
            else:
                raise DownloadError(f"{entry.path} is not a regular file (a socket, pipe or device)", kind="not_a_file")

    def plan(self, ref: Reference) -> Plan:
        assert isinstance(ref, FileRef)
        sources = self._sources(ref.path)
        device = _models_dir_device()
        return Plan(
            vendor=self.name,
            reference=ref.canonical,
            revision="",
            # sha256 is unknown here: the preview plans on every keystroke, and
            # hashing a 40 GB folder is the fetch's work, not the plan's.
            files=[PlannedFile(path=s.relative, size=s.size, url=f"file:{s.real}") for s in sources],
            # A guess for the disk check and the preview (same filesystem: links, no space);
            # what fetch actually did is in its FetchResult.
            extra={"source": ref.path, "linked": all(s.device == device for s in sources)},
        )

    def describe(self, plan: Plan) -> dict[str, Any]:
        """The headers of the files to import, read in place."""
        source = Path(str(plan.extra.get("source", "")))
        folder = source if source.is_dir() else source.parent
        return metadata.describe([f.path for f in plan.files], metadata.local_reader(folder))

    def fetch(self, plan: Plan, dest: Path, progress: Progress, cancelled: CancelToken) -> FetchResult:
        """Hardlink (same filesystem) or copy each file, hashing it either way.

        The sources are looked up again rather than trusted from the plan: a job
        may resume days later, after links below the root were changed.
        """
        current = {s.relative: s for s in self._sources(str(plan.extra["source"]))}
        digests: dict[str, str] = {}
        all_linked = True
        for planned in plan.files:
            if cancelled():
                raise Cancelled()
            source = current.get(planned.path)
            if source is None:
                raise NotFound(f"{planned.path} has disappeared from {plan.extra['source']} since the plan")
            if source.size != planned.size:
                raise VerificationError(
                    f"{planned.path} changed since the plan: {source.size} bytes now, {planned.size} planned"
                )
            target = inside(dest, planned.path)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.unlink(missing_ok=True)
            linked = self._link(source.real, target)
            all_linked = all_linked and linked
            digest = self._hash_or_copy(source, target, copy=not linked, progress=progress, cancelled=cancelled)
            progress.file_done(planned.path, planned.size, digest)
            digests[planned.path] = digest
        # What actually happened, not the plan's guess: a link can be refused
        # (e.g. by fs.protected_hardlinks) and the file copied instead.
        return FetchResult(sha256=digests, linked=all_linked)

    def _link(self, source: str, target: Path) -> bool:
        try:
            os.link(source, target, follow_symlinks=False)
        except OSError:
            return False
        return True

    def _hash_or_copy(
        self, source: _Source, target: Path, *, copy: bool, progress: Progress, cancelled: CancelToken
    ) -> str:
        hasher = hashlib.sha256()
        done = 0
        # O_NOFOLLOW: the real path has no links in it, so a link appearing there
        # now was swapped in after the check, and is not followed.
        fd = os.open(source.real, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
        try:
            with os.fdopen(fd, "rb", buffering=0) as src:
                if not stat.S_ISREG(os.fstat(src.fileno()).st_mode):
                    raise DownloadError(f"{source.relative} is no longer a regular file", kind="not_a_file")
                out = open(target, "wb") if copy else None
                try:
                    while block := src.read(CHUNK):
                        hasher.update(block)
                        if out is not None:
                            out.write(block)
                        done += len(block)
                        progress.advance(source.relative, done)
                        if cancelled():
                            raise Cancelled()
                finally:
                    if out is not None:
                        out.close()
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise DiskFull(f"{source.relative}: the disk is full ({exc.strerror})") from None
            if exc.errno == errno.ELOOP:
                raise UnsafePath(f"{source.relative}: its path changed into a link since it was checked") from None
            raise DownloadError(f"{source.relative}: cannot read it: {exc.strerror}") from None
        if done != source.size:
            raise VerificationError(f"{source.relative} changed while importing: {done} bytes read, {source.size} expected")
        return hasher.hexdigest()

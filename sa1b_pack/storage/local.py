"""A store in a local folder: temp folder + fsync + rename for parts, atomic replace for the
manifest and its deltas, an ``flock`` for the one packer, parts read memory-mapped (see
base.py)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import fsspec

from ..errors import StoreError
from ..format.files import (
    DELTA_SUFFIX,
    LOCK_FILE,
    MANIFEST,
    MANIFESTS_DIR,
    PARTS_DIR,
    part_files,
)
from .base import RequestStats, Storage
from .faults import crash_point


class LocalStorage(Storage):
    cache = None  # read in place: a local store needs no part cache

    def __init__(self, path: str) -> None:
        self.url = self.base = os.path.abspath(path)
        self.root = Path(self.url)
        self.fs = fsspec.filesystem("file")
        self.stats = RequestStats()  # stays zero: a local store makes no requests

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return LocalStorage, (self.url,)  # workers rebuild their own handles

    def load_manifest(self) -> tuple[bytes, list[bytes]] | None:
        try:
            full = (self.root / MANIFEST).read_bytes()
        except FileNotFoundError:
            return None
        return full, [path.read_bytes() for _, path in self._deltas()]

    def _deltas(self) -> list[tuple[int, Path]]:
        """(generation, path) of the committed delta files, oldest first."""
        try:
            names = os.listdir(self.root / MANIFESTS_DIR)
        except FileNotFoundError:
            return []
        return sorted(
            (int(name[: -len(DELTA_SUFFIX)]), self.root / MANIFESTS_DIR / name)
            for name in names
            if name.endswith(DELTA_SUFFIX) and name[: -len(DELTA_SUFFIX)].isdigit()
        )

    def save_manifest(self, body: bytes, generation: int) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        write_atomic(self.root / MANIFEST, body)
        for left in self.root.glob(f".{MANIFEST}.tmp-*"):  # what killed writers left
            left.unlink(missing_ok=True)
        folder = self.root / MANIFESTS_DIR
        if not folder.is_dir():
            return
        # the deltas it holds now (oldest first: a crash leaves a run readers skip) and
        # what killed writers left; newer deltas cannot exist under the writer lock
        deltas = self._deltas()
        stale = [path for g, path in deltas if g <= generation]
        committed = {path.name for _, path in deltas}
        stale += [folder / n for n in sorted(os.listdir(folder)) if n not in committed]
        for path in stale:
            path.unlink(missing_ok=True)
            crash_point("delta-dropped")
        fsync_dir(folder)
        with contextlib.suppress(OSError):  # at rest: manifest.json alone
            folder.rmdir()
            fsync_dir(self.root)

    def save_delta(self, body: bytes, generation: int) -> None:
        folder = self.root / MANIFESTS_DIR
        if not folder.is_dir():
            folder.mkdir(parents=True)
            fsync_dir(self.root)
        write_atomic(folder / f"{generation:010d}{DELTA_SUFFIX}", body)

    @contextmanager
    def writer_lock(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
                raise StoreError(
                    f"{self.url} is being packed by pid {holder}; wait for it to finish"
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            yield
        finally:
            os.close(fd)

    @contextmanager
    def staging(self, name: str) -> Iterator[Path]:
        parts = self.root / PARTS_DIR
        parts.mkdir(parents=True, exist_ok=True)
        folder = parts / f".tmp-{name}-{uuid.uuid4().hex[:8]}"  # same disk: rename is atomic
        folder.mkdir()
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)  # gone already once published

    def publish(self, folder: Path, name: str) -> dict[str, Any]:
        # Leftovers of killed runs were dropped when the packer opened the store, so a folder
        # of this name is a committed part being replaced: it stays until the new manifest.
        final = self.root / PARTS_DIR / name
        located: dict[str, Any] = {}
        if final.exists():
            final = final.with_name(f"{name}-{uuid.uuid4().hex[:8]}")
            located = {"path": f"{PARTS_DIR}/{final.name}"}
        fsync_dir(folder)
        crash_point("part-written")
        os.rename(folder, final)
        fsync_dir(final.parent)
        crash_point("part-renamed")
        return located

    def broken_parts(self, shards: dict[str, dict[str, Any]]) -> list[str]:
        def intact(name: str, entry: dict[str, Any]) -> bool:
            folder = Path(self.part_path(name, entry))
            return all(
                (folder / f).is_file() and (folder / f).stat().st_size == entry["files"][f]["bytes"]
                for f in part_files(entry)
            )

        return sorted(name for name, entry in shards.items() if not intact(name, entry))

    @contextmanager
    def add_file(self, name: str, entry: dict[str, Any], file: str) -> Iterator[Path]:
        final = Path(self.part_path(name, entry)) / file
        if not final.parent.is_dir():
            final.parent.mkdir()
            fsync_dir(final.parent.parent)
        tmp = final.with_name(f".tmp-{final.name}")  # same folder: the rename is atomic
        try:
            yield tmp
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            crash_point("attach-written")
            os.rename(tmp, final)
            fsync_dir(final.parent)
        finally:
            tmp.unlink(missing_ok=True)

    def drop_unlisted(self, shards: dict[str, dict[str, Any]]) -> None:
        parts = self.root / PARTS_DIR
        listed = {Path(self.part_path(n, e)).name for n, e in shards.items()}
        if parts.is_dir():
            for path in parts.iterdir():
                if path.name not in listed:
                    shutil.rmtree(path, ignore_errors=True)

    def local_folder(self, name: str, entry: dict[str, Any]) -> Path:
        return Path(self.part_path(name, entry))


def fsync_dir(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that readers see the old or the new bytes, never a mix."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    crash_point("manifest-written")
    os.replace(tmp, path)
    crash_point("manifest-replaced")
    fsync_dir(path.parent)

"""Where a store's files live: the one seam between a local folder and object storage.

``storage_for(url)`` picks the backend once, from the URL (the way MosaicML Streaming picks an
uploader); everything above talks to the ``Storage`` interface and never asks which it is.

- ``LocalStorage``: a folder. A part is written in a temp folder beside its final place,
  fsynced and renamed; the manifest is replaced atomically; one packer at a time holds an
  ``flock`` that the kernel drops when the process dies. Parts are read memory-mapped.
- ``ObjectStorage`` (s3://, gs://, any fsspec URL): no atomic rename there, so each part is
  uploaded under a prefix of its own (``parts/sa_000000-<uuid>/``) and committed by writing
  the next manifest generation ``manifests/<generation:010d>.json``; objects are never
  overwritten, and readers take the newest generation. Parts are read by byte range, with
  requests and bytes counted in ``stats``. One packer per remote store (no lock there).

This module imports no numpy or pyarrow: the manifest-only commands use it.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec

from .cache import PartCache
from .errors import StoreError
from .faults import crash_point
from .format import (
    ATTACHED_DIR,
    LOCK_FILE,
    MANIFEST,
    MANIFESTS_DIR,
    PART_FILES,
    PARTS_DIR,
    part_files,
)


def storage_for(root: str | os.PathLike | Storage, cache: PartCache | None = None) -> Storage:
    """The backend for a store URL or path: chosen here, and only here. ``cache`` keeps
    whole parts of a store on object storage on local disk; a local store needs none and
    ignores it."""
    if isinstance(root, Storage):
        return root
    url = os.fspath(root)
    protocol = fsspec.core.split_protocol(url)[0]
    if protocol in (None, "file", "local"):
        return LocalStorage(fsspec.core.strip_protocol(url) if protocol else url)
    return ObjectStorage(url.rstrip("/"), cache)


@dataclass
class RequestStats:
    """Requests and bytes this process fetched from object storage, per store."""

    requests: int = 0
    bytes: int = 0


class Storage:
    """A store's files: manifest, parts, and the steps that commit a part."""

    url: str
    fs: fsspec.AbstractFileSystem
    base: str  # the store's path inside ``fs``
    stats: RequestStats

    cache: PartCache | None = None

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return storage_for, (self.url, self.cache)  # workers rebuild their own handles

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    def part_path(self, name: str, entry: dict[str, Any]) -> str:
        """Path of a committed part's folder inside ``fs``."""
        return f"{self.base}/{entry.get('path', f'{PARTS_DIR}/{name}')}"

    def load_manifest(self) -> bytes | None:
        """The committed manifest's bytes, or None if the store has none yet."""
        raise NotImplementedError

    def save_manifest(self, body: bytes) -> None:
        """Commit: the new manifest replaces the old one for every reader, or nothing does."""
        raise NotImplementedError

    def writer_lock(self) -> Any:
        """Context: the right to pack into this store (StoreError if another process has it)."""
        raise NotImplementedError

    def staging(self, name: str) -> Any:
        """Context yielding a local folder to write part ``name`` into; removed on exit."""
        raise NotImplementedError

    def publish(self, folder: Path, name: str) -> dict[str, Any]:
        """Make a written part durable where readers will find it, once the manifest lists
        it; returns what the manifest entry must add to locate it."""
        raise NotImplementedError

    def broken_parts(self, shards: dict[str, dict[str, Any]]) -> list[str]:
        """Listed parts whose files are missing or of the wrong size (cheap: no hashing)."""
        return []

    def drop_unlisted(self, shards: dict[str, dict[str, Any]]) -> None:
        """Remove what a killed packer left and no manifest names (the caller packs alone)."""
        raise NotImplementedError

    def remove_part(self, name: str, old: dict[str, Any], keep: dict[str, Any]) -> None:
        """Delete the files of ``old``, a part the manifest no longer lists (replaced by
        ``keep`` under the same name), unless they are ``keep``'s."""
        if self.part_path(name, old) != self.part_path(name, keep):
            self.fs.rm(self.part_path(name, old), recursive=True)

    def open_part(self, name: str, entry: dict[str, Any]) -> Any:
        """The part-reading protocol (parts.py) over this backend."""
        raise NotImplementedError

    def add_file(self, name: str, entry: dict[str, Any], file: str) -> Any:
        """Context yielding a local path to write a new file of a committed part into; on a
        clean exit the file is durable at ``file`` (relative to the part) and waits for the
        manifest to list it. ``file`` must be a new name: nothing is ever overwritten."""
        raise NotImplementedError

    def drop_unlisted_files(self, name: str, entry: dict[str, Any]) -> None:
        """Remove the part's attached files its entry does not list: what a killed attach
        left, or what a detach or re-attach replaced (the caller holds the writer lock)."""
        folder = f"{self.part_path(name, entry)}/{ATTACHED_DIR}"
        listed = set(part_files(entry))
        self.fs.invalidate_cache(folder)
        try:
            found = self.fs.ls(folder, detail=False)
        except FileNotFoundError:
            return
        for path in found:
            if f"{ATTACHED_DIR}/{path.rstrip('/').rsplit('/', 1)[-1]}" not in listed:
                self.fs.rm(path, recursive=True)

    def predownload(self, parts: list[tuple[str, dict[str, Any]]]) -> None:
        """Fetch these parts ahead of their first use, in order, where that helps (a store
        on object storage with a cache); otherwise nothing."""


class LocalStorage(Storage):
    def __init__(self, path: str) -> None:
        self.url = self.base = os.path.abspath(path)
        self.root = Path(self.url)
        self.fs = fsspec.filesystem("file")
        self.stats = RequestStats()  # stays zero: a local store makes no requests

    def load_manifest(self) -> bytes | None:
        try:
            return (self.root / MANIFEST).read_bytes()
        except FileNotFoundError:
            return None

    def save_manifest(self, body: bytes) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        write_atomic(self.root / MANIFEST, body)

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

    def open_part(self, name: str, entry: dict[str, Any]) -> Any:
        from .parts import MappedPart

        return MappedPart(Path(self.part_path(name, entry)), name, entry)


class ObjectStorage(Storage):
    def __init__(self, url: str, cache: PartCache | None = None) -> None:
        self.url = url
        self.fs, self.base = fsspec.core.url_to_fs(url)
        self.stats = RequestStats()
        self.cache = cache

    def _generations(self) -> list[str]:
        try:
            names = self.fs.ls(f"{self.base}/{MANIFESTS_DIR}", detail=False)
        except FileNotFoundError:
            return []
        names = sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in names)
        return [n for n in names if n.endswith(".json") and n[:-5].isdigit()]

    def load_manifest(self) -> bytes | None:
        generations = self._generations()
        if not generations:
            return None
        return self.fs.cat_file(f"{self.base}/{MANIFESTS_DIR}/{generations[-1]}")

    def save_manifest(self, body: bytes) -> None:
        generations = self._generations()
        number = int(generations[-1][:-5]) + 1 if generations else 1
        self.fs.pipe_file(f"{self.base}/{MANIFESTS_DIR}/{number:010d}.json", body)

    def writer_lock(self) -> Any:
        return nullcontext()

    @contextmanager
    def staging(self, name: str) -> Iterator[Path]:
        with tempfile.TemporaryDirectory(prefix=f"sa1b-{name}-") as scratch:
            yield Path(scratch)

    def publish(self, folder: Path, name: str) -> dict[str, Any]:
        prefix = f"{PARTS_DIR}/{name}-{uuid.uuid4().hex[:8]}"
        for f in PART_FILES:
            self.fs.put_file(str(folder / f), f"{self.base}/{prefix}/{f}")
        return {"path": prefix}

    @contextmanager
    def add_file(self, name: str, entry: dict[str, Any], file: str) -> Iterator[Path]:
        with tempfile.TemporaryDirectory(prefix=f"sa1b-{name}-") as scratch:
            local = Path(scratch) / "file"
            yield local
            crash_point("attach-written")
            self.fs.put_file(str(local), f"{self.part_path(name, entry)}/{file}")

    def drop_unlisted(self, shards: dict[str, dict[str, Any]]) -> None:
        listed = {entry["path"] for entry in shards.values()}
        try:
            prefixes = self.fs.ls(f"{self.base}/{PARTS_DIR}", detail=False)
        except FileNotFoundError:
            return
        for prefix in prefixes:
            if f"{PARTS_DIR}/{prefix.rstrip('/').rsplit('/', 1)[-1]}" not in listed:
                self.fs.rm(prefix, recursive=True)

    def open_part(self, name: str, entry: dict[str, Any]) -> Any:
        if self.cache is None:
            from .ranged import RangePart

            return RangePart(self, name, entry)
        from .parts import MappedPart

        for attempt in (1, 2):
            folder = self.cache.get(self, name, entry)
            try:
                return MappedPart(folder, name, entry)
            except (FileNotFoundError, StoreError):
                if attempt == 2 or folder.is_dir():  # evicted by another process meanwhile:
                    raise  # fetch it once more; anything else is a real error
        raise AssertionError("unreachable")

    def predownload(self, parts: list[tuple[str, dict[str, Any]]]) -> None:
        if self.cache is not None:
            self.cache.predownload(self, parts)

    def fetch(self, path: str, start: int, end: int) -> bytes:
        """One counted range request."""
        data = self.fs.cat_file(path, start=start, end=end)
        self.stats.requests += 1
        self.stats.bytes += len(data)
        return data


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

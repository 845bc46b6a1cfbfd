"""A local cache of whole parts of a store on object storage, bounded in bytes and shared by
every process of a machine (DataLoader workers, ranks).

A cached part is a folder of the part's files, read memory-mapped like a local part, so once
it is here a sample costs what it costs locally. Layout: ``<dir>/<store key>/<part>/``,
where the store key is a hash of the store URL and ``<part>`` the part's unique upload
prefix (a re-packed shard is a new prefix, never a stale hit).

- No duplicate downloads: a part is downloaded under an exclusive ``flock`` of its own; a
  second process asking for it waits on the lock and then finds it complete.
- Crash-safe: files land in ``.tmp-<part>-<id>/``, sizes are checked against the manifest,
  and only a complete folder is renamed into place; a killed download leaves a temp folder
  that the next download of that part removes. A half-written part is never served.
- Byte limit: before a download, room is made under a cache-wide lock by deleting the least
  recently used complete parts (use = open), counting downloads in flight at their full
  size, so cached + in-flight bytes never exceed ``max_bytes``. Deleting a part another
  process has mapped is safe on Linux: its maps stay valid until it lets go of them.
- Read ahead, evict behind: a reader that knows its order (``SA1BSampler``) predownloads the
  parts it reads next and ``release``s those it is done with; a released part goes first,
  and predownloads may evict released parts only, never one still to be read.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import queue
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, StoreError
from ..format.files import part_files
from .base import Storage, part_folder
from .faults import crash_point

TMP = ".tmp-"
RESERVED = ".bytes"  # in a temp folder: the full size of the part being downloaded
POLL_SECONDS = 0.2  # a predownload waiting for free room looks again this often
RELEASED = 0.0  # mtime of a part its reader is done with: least recently used of all


@dataclass
class CacheStats:
    """What this process did with the cache."""

    hits: int = 0
    downloads: int = 0
    downloaded_bytes: int = 0
    evicted: list[str] = field(default_factory=list)


@contextmanager
def _flock(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # the kernel drops the lock, also when the process dies


def _part_bytes(entry: dict[str, Any]) -> int:
    return sum(entry["files"][f]["bytes"] for f in part_files(entry))


def _complete(folder: Path, entry: dict[str, Any]) -> bool:
    """Every file of the part's entry is in the folder (arrays attached since it was cached
    are not)."""
    return all((folder / a["file"]).is_file() for a in entry.get("attached", {}).values())


def _folder_bytes(folder: Path) -> int:
    reserved = folder / RESERVED
    if reserved.exists():
        try:
            return int(reserved.read_text())
        except ValueError:
            pass
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


class PartCache:
    """Whole parts of object-storage stores in a local directory, at most ``max_bytes``."""

    def __init__(self, directory: str | os.PathLike, max_bytes: int) -> None:
        if max_bytes < 1:
            raise ConfigError(f"max_bytes must be positive, got {max_bytes}")
        self.directory = Path(directory)
        self.max_bytes = int(max_bytes)
        self.stats = CacheStats()
        self._ahead: queue.SimpleQueue | None = None
        self._pid = os.getpid()
        self._generation = 0  # predownloads queued before the last replace=True are dropped
        self._released: set[Path] = set()  # parts this process released: not fetched again

    def __reduce__(self) -> tuple[Any, tuple[str, int]]:
        return PartCache, (os.fspath(self.directory), self.max_bytes)

    def __repr__(self) -> str:
        return f"PartCache({os.fspath(self.directory)!r}, max_bytes={self.max_bytes:,})"

    def _store_dir(self, storage: Storage) -> Path:
        key = hashlib.sha256(storage.url.encode()).hexdigest()[:16]
        folder = self.directory / key
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def _folder(self, storage: Storage, name: str, entry: dict[str, Any]) -> Path:
        return self._store_dir(storage) / part_folder(storage.url, name, entry).rsplit("/", 1)[-1]

    def has(self, storage: Storage, name: str, entry: dict[str, Any]) -> bool:
        """Whether the part is here, complete, now (nothing is downloaded or waited for)."""
        final = self._folder(storage, name, entry)
        return final.is_dir() and _complete(final, entry)

    def get(
        self,
        storage: Storage,
        name: str,
        entry: dict[str, Any],
        *,
        evict: bool | str = True,
    ) -> Path | None:
        """The local folder of a part's complete files, downloaded first if need be. With
        ``evict=False`` nothing is evicted, with ``evict="released"`` (predownloads) only
        released parts are: None if that leaves no room."""
        final = self._folder(storage, name, entry)
        base, part = final.parent, final.name
        if final.is_dir() and _complete(final, entry):
            os.utime(final)  # most recently used
            self.stats.hits += 1
            return final
        with _flock(base / f"{part}.lock"):
            if final.is_dir():  # another process downloaded it while we waited
                self._add_attached(storage, name, entry, final)
                os.utime(final)
                self.stats.hits += 1
                return final
            for stale in base.glob(f"{TMP}{part}-*"):  # a killed download of this part
                shutil.rmtree(stale, ignore_errors=True)
            size = _part_bytes(entry)
            tmp = self._reserve(base, part, size, evict)
            if tmp is None:
                return None
            try:
                self._download(storage, name, entry, tmp)
                (tmp / RESERVED).unlink()
                self.stats.downloads += 1
                self.stats.downloaded_bytes += size
                os.rename(tmp, final)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        return final

    def _reserve(self, base: Path, part: str, size: int, evict: bool | str) -> Path | None:
        """Make room for ``size`` bytes (evicting least recently used parts, if ``evict``;
        released ones only, if ``"released"``) and claim it with a temp folder, all under the
        cache-wide lock."""
        if size > self.max_bytes:
            raise StoreError(
                f"part {part} has {size:,} bytes, more than the whole cache "
                f"({self.max_bytes:,} bytes at {self.directory}): raise the cache size"
            )
        with _flock(self.directory / ".lock"):
            entries = []
            for store in (p for p in self.directory.iterdir() if p.is_dir()):
                for folder in (p for p in store.iterdir() if p.is_dir()):
                    entries.append((folder.stat().st_mtime, folder, _folder_bytes(folder)))
            used = sum(b for _, _, b in entries)
            complete = sorted(e for e in entries if not e[1].name.startswith(TMP))
            if evict == "released":
                complete = [e for e in complete if e[0] == RELEASED]
                if used - sum(e[2] for e in complete) + size > self.max_bytes:
                    return None
            elif not evict and used + size > self.max_bytes:
                return None
            while used + size > self.max_bytes and complete:
                _, folder, freed = complete.pop(0)
                shutil.rmtree(folder, ignore_errors=True)
                self.stats.evicted.append(folder.name)
                used -= freed
            if used + size > self.max_bytes:
                raise StoreError(
                    f"cache {self.directory} is full of downloads in flight: "
                    f"{used:,} of {self.max_bytes:,} bytes; raise the cache size"
                )
            tmp = base / f"{TMP}{part}-{uuid.uuid4().hex[:8]}"
            tmp.mkdir()
            (tmp / RESERVED).write_text(str(size))
        return tmp

    def _add_attached(
        self, storage: Storage, name: str, entry: dict[str, Any], final: Path
    ) -> None:
        """Arrays attached to a part after it was cached: each downloaded beside the part's
        files, to a temp name renamed when complete (called under the part's lock). They
        are not counted against the cache before the part's next download."""
        missing = [f for f in part_files(entry) if not (final / f).is_file()]
        if not missing:
            return
        tmp = final / f"{TMP}attached-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            self._download(storage, name, entry, tmp, missing)
            for f in missing:
                (final / f).parent.mkdir(exist_ok=True)
                os.rename(tmp / f, final / f)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _download(
        self,
        storage: Storage,
        name: str,
        entry: dict[str, Any],
        tmp: Path,
        files: list[str] | None = None,
    ) -> None:
        remote = storage.part_path(name, entry)
        for f in files or part_files(entry):
            (tmp / f).parent.mkdir(exist_ok=True)
            storage.fs.get_file(f"{remote}/{f}", str(tmp / f))
            crash_point("cache-file")
            size = (tmp / f).stat().st_size
            if size != entry["files"][f]["bytes"]:
                raise StoreError(
                    f"{storage.url}: {name}/{f} downloaded as {size:,} bytes, the manifest "
                    f"says {entry['files'][f]['bytes']:,}"
                )

    def release(self, storage: Storage, name: str, entry: dict[str, Any]) -> None:
        """This process is done reading the part (for now): it becomes the first to be
        evicted, predownloads may evict it, and this process's predownloads skip it. Reading
        it again (a ``get``) takes it back."""
        folder = self._folder(storage, name, entry)
        self._released.add(folder)
        try:
            os.utime(folder, (RELEASED, RELEASED))
        except FileNotFoundError:  # evicted already, or never downloaded here
            pass

    def predownload(
        self,
        storage: Storage,
        parts: list[tuple[str, dict[str, Any]]],
        *,
        replace: bool = False,
    ) -> None:
        """Download these parts, in this order, on a background thread, so that they are here
        when asked for. A predownload fills free room and evicts only released parts: it
        waits until reads or releases make room, so it cannot push out what is being read.
        ``replace=True`` drops what earlier calls queued and forgets earlier releases (a new
        pass: parts released in the last one are needed again)."""
        if self._ahead is None or self._pid != os.getpid():  # threads do not survive fork
            self._ahead, self._pid = queue.SimpleQueue(), os.getpid()
            threading.Thread(target=self._predownload_loop, args=(self._ahead,),
                             daemon=True).start()  # fmt: skip
        if replace:
            self._generation += 1
            self._released = set()
        for name, entry in parts:
            self._ahead.put((self._generation, storage, name, entry))

    def _wanted(self, generation: int, storage: Storage, name: str, entry: dict) -> bool:
        """A queued predownload is still wanted: not replaced, not released since."""
        return generation == self._generation and (
            self._folder(storage, name, entry) not in self._released
        )

    def _predownload_loop(self, ahead: queue.SimpleQueue) -> None:
        while (item := ahead.get()) is not None:
            generation, *part = item
            try:
                while self._wanted(generation, *part):
                    if self.get(*part, evict="released") is not None:
                        break
                    time.sleep(POLL_SECONDS)
            except Exception:  # a predownload is a hint: the reader's own get() reports errors
                continue

"""A store on object storage (s3://, gs://, any fsspec URL): parts under prefixes of their
own, committed by manifest generations, read by counted byte ranges or through the local part
cache (see base.py)."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import fsspec

from ..format.files import (
    DELTA_SUFFIX,
    MANIFESTS_DIR,
    PART_FILES,
    PARTS_DIR,
)
from .base import RequestStats, Storage
from .cache import PartCache
from .faults import crash_point


class ObjectStorage(Storage):
    def __init__(self, url: str, cache: PartCache | None = None) -> None:
        self.url = url
        self._fs, self.base = fsspec.core.url_to_fs(url)
        self._pid = os.getpid()
        self.stats = RequestStats()
        self.cache = cache

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        """This process's filesystem: an async one (s3fs, gcsfs) used before a fork is not
        fork-safe, so a forked child (DataLoader workers) makes its own on first use."""
        if self._pid != os.getpid():
            self._fs, self._pid = fsspec.core.url_to_fs(self.url)[0], os.getpid()
        return self._fs

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return ObjectStorage, (self.url, self.cache)  # workers rebuild their own handles

    def _generations(self) -> list[tuple[int, bool]]:
        """(number, is a delta) of every manifest object, oldest first."""
        try:
            paths = self.fs.ls(f"{self.base}/{MANIFESTS_DIR}", detail=False)
        except FileNotFoundError:
            return []
        found = []
        for name in (p.rstrip("/").rsplit("/", 1)[-1] for p in paths):
            for suffix, delta in ((DELTA_SUFFIX, True), (".json", False)):
                if name.endswith(suffix) and name[: -len(suffix)].isdigit():
                    found.append((int(name[: -len(suffix)]), delta))
                    break
        return sorted(found)

    def _path(self, number: int, delta: bool) -> str:
        return f"{self.base}/{MANIFESTS_DIR}/{number:010d}{DELTA_SUFFIX if delta else '.json'}"

    def load_manifest(self) -> tuple[bytes, list[bytes]] | None:
        generations = self._generations()
        full = [n for n, delta in generations if not delta]
        if not full:
            return None
        deltas = [self._path(n, True) for n, delta in generations if delta and n > full[-1]]
        bodies = self.fs.cat(deltas) if len(deltas) > 1 else {}  # concurrent where fs can
        deltas = [bodies[p] if p in bodies else self.fs.cat_file(p) for p in deltas]
        return self.fs.cat_file(self._path(full[-1], False)), deltas

    def save_manifest(self, body: bytes, generation: int) -> None:
        self._save(body, delta=False)

    def save_delta(self, body: bytes, generation: int) -> None:
        self._save(body, delta=True)

    def _save(self, body: bytes, delta: bool) -> None:
        """The next object number (full manifests and deltas share one sequence)."""
        generations = self._generations()
        number = generations[-1][0] + 1 if generations else 1
        self.fs.pipe_file(self._path(number, delta), body)

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

    def local_folder(self, name: str, entry: dict[str, Any]) -> Path | None:
        return None if self.cache is None else self.cache.get(self, name, entry)

    def predownload(self, parts: list[tuple[str, dict[str, Any]]]) -> None:
        if self.cache is not None:
            self.cache.predownload(self, parts)

    def fetch(self, path: str, start: int, end: int) -> bytes:
        """One counted range request."""
        data = self.fs.cat_file(path, start=start, end=end)
        self.stats.requests += 1
        self.stats.bytes += len(data)
        return data

"""Where a store's files live: the one seam between a local folder and object storage.

``storage_for(url)`` picks the backend once, from the URL (the way MosaicML Streaming picks an
uploader); everything above talks to the ``Storage`` interface and never asks which it is.

- ``LocalStorage``: a folder. A part is written in a temp folder beside its final place,
  fsynced and renamed; the manifest and each commit delta are written atomically; one packer
  at a time holds an ``flock`` that the kernel drops when the process dies. Parts are read
  memory-mapped.
- ``ObjectStorage`` (s3://, gs://, any fsspec URL): no atomic rename there, so each part is
  uploaded under a prefix of its own (``parts/sa_000000-<uuid>/``) and committed by writing
  the next manifest generation ``manifests/<n:010d>.json`` (or ``.delta.json``); objects are
  never overwritten, and readers take the newest full generation and the deltas after it.
  Parts are read by byte range, with requests and bytes counted in ``stats``. One packer per
  remote store (no lock there).

Which commits are deltas and which full manifests is decided in journal.py.

The interface is here, the backends in ``local.py`` and ``objects.py``, the choice in
``__init__.py``. This module imports no
numpy or pyarrow: the manifest-only commands use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec

from ..errors import StoreError
from ..format.files import (
    ATTACHED_DIR,
    PARTS_DIR,
    part_files,
)


def part_folder(url: str, name: str, entry: dict[str, Any]) -> str:
    """A part's folder relative to its store, ``parts/<one name>`` as both backends write
    it; StoreError naming the part for any other path (absolute, ``..``, nested, a URL)."""
    path = entry.get("path", f"{PARTS_DIR}/{name}")
    head, _, folder = path.partition("/") if isinstance(path, str) else ("", "", "")
    if head != PARTS_DIR or folder in ("", ".", "..") or "/" in folder or "\\" in folder:
        raise StoreError(f"{url}: manifest entry of {name} puts its part at {path!r}, outside "
                         f"the store's {PARTS_DIR}/ folder: refusing to read it")  # fmt: skip
    return path


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

    journal: Any = None  # journal.Journal: where the manifest stands, once read or written

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    def part_path(self, name: str, entry: dict[str, Any]) -> str:
        """Path of a committed part's folder inside ``fs``; StoreError if the manifest puts
        it anywhere but ``parts/<folder>`` (a store from elsewhere must not read the rest
        of the machine or bucket)."""
        return f"{self.base}/{part_folder(self.url, name, entry)}"

    def load_manifest(self) -> tuple[bytes, list[bytes]] | None:
        """The newest full manifest's bytes and the deltas committed after it, oldest first
        (locally every delta file: the caller skips those the full one holds), or None if
        the store has no manifest yet. FileNotFoundError if a delta vanished meanwhile."""
        raise NotImplementedError

    def save_manifest(self, body: bytes, generation: int) -> None:
        """Commit a full manifest: it replaces the old one and the deltas up to
        ``generation`` for every reader, or nothing does."""
        raise NotImplementedError

    def save_delta(self, body: bytes, generation: int) -> None:
        """Commit delta ``generation``: readers see it after the full manifest, or not at all."""
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

    def local_folder(self, name: str, entry: dict[str, Any]) -> Path | None:
        """A local folder holding the part's files, to be memory-mapped (fetched into the
        cache first where there is one), or None: read it by byte range instead."""
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

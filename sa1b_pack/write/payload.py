"""A part's payload files as the writer appends to them: hashed as written, fsynced and closed
on threads that overlap the table writes (write/writer.py)."""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

from ..format.files import PART_FILES


class PayloadFile:
    """An append-only payload, hashed as it is written (the bytes are in cache then: no
    second pass over the file for its manifest digest)."""

    def __init__(self, path: Path) -> None:
        self.file = open(path, "wb")  # closed by the syncer
        self.hash = hashlib.sha256()
        self.size = 0

    def append(self, data: bytes | memoryview) -> int:
        offset = self.size
        self.file.write(data)
        self.hash.update(data)
        self.size += len(data)
        return offset

    def digest(self) -> dict[str, Any]:
        return {"bytes": self.size, "sha256": self.hash.hexdigest()}


class Syncer:
    """fsync (and close) a part's files on threads while the packer goes on: the wait is the
    disk's, not the CPU's, so it overlaps building and writing the tables. ``wait()``
    re-raises what a sync met; nothing is published before it returns."""

    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(len(PART_FILES), thread_name_prefix="fsync")
        self.pending: list[Future] = []

    def sync(self, files: list[BinaryIO]) -> None:
        for f in files:
            f.flush()
            self.pending.append(self.pool.submit(_sync_and_close, f))

    def wait(self) -> None:
        try:
            for done in self.pending:
                done.result()
        finally:
            self.pool.shutdown(wait=True)


def _sync_and_close(f: BinaryIO) -> None:
    with f:
        os.fsync(f.fileno())

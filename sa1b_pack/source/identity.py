"""A shard file's identity: size, modification time and a cheap content fingerprint.

Recorded in the manifest when a shard is packed, so a later ``pack`` notices a tar that was
replaced since (re-downloaded after a truncation, fixed, or taken from another mirror). The
fingerprint hashes the size and the first and last MiB: cheap on a 10 GB tar, and enough to
tell a truncated download from a whole one or one mirror's file from another's. A file that
only moved or was copied (new mtime, same size and fingerprint) is the same file.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from typing import Any

from .shards import source_fs

FINGERPRINT_SPAN = 1 << 20


def _stat(url: str | os.PathLike) -> tuple[Any, str, int, float | None]:
    fs, path = source_fs(url)
    info = fs.info(path)
    mtime = info.get("mtime", info.get("LastModified", info.get("last_modified")))
    if isinstance(mtime, dt.datetime):
        mtime = mtime.timestamp()
    return fs, path, int(info["size"]), float(mtime) if mtime is not None else None


def _fingerprint(fs: Any, path: str, size: int) -> str:
    digest = hashlib.sha256(str(size).encode())
    with fs.open(path, "rb", block_size=FINGERPRINT_SPAN) as f:
        digest.update(f.read(FINGERPRINT_SPAN))
        if size > FINGERPRINT_SPAN:
            f.seek(max(FINGERPRINT_SPAN, size - FINGERPRINT_SPAN))
            digest.update(f.read())
    return digest.hexdigest()[:32]


def source_identity(url: str | os.PathLike) -> dict[str, Any]:
    """``{"bytes", "mtime", "fingerprint"}`` of a shard file (local path or fsspec URL)."""
    fs, path, size, mtime = _stat(url)
    return {"bytes": size, "mtime": mtime, "fingerprint": _fingerprint(fs, path, size)}


def source_change(recorded: dict[str, Any], url: str | os.PathLike) -> str | None:
    """None if ``url`` is still the file ``recorded`` describes; else what differs, in words.

    Size and mtime unchanged: the same file, nothing read. Otherwise the fingerprint decides
    (stores packed before fingerprints were recorded compare sizes only)."""
    fs, path, size, mtime = _stat(url)
    if size == recorded["bytes"] and mtime == recorded.get("mtime"):
        return None
    if size != recorded["bytes"]:
        return f"it was {recorded['bytes']:,} bytes when packed, it is {size:,} bytes now"
    if "fingerprint" not in recorded or _fingerprint(fs, path, size) == recorded["fingerprint"]:
        return None
    return f"same size ({size:,} bytes) but different content than when packed"

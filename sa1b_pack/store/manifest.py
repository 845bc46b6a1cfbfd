"""The manifest: which shards a store holds, and the one atomic step that commits a shard.

Only the packing process writes it, by writing a temp file, fsyncing it and renaming it over
the old one, so a reader (or a crash) sees either the old or the new manifest, never a torn one.
A writer holds an advisory ``flock`` on the store's lock file; the kernel drops it when the
process dies, so a crash never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from ..codec.jpeg import RESIZED_QUALITY
from .faults import crash_point
from .format import FORMAT_NAME, FORMAT_VERSION, LOCK_FILE, MANIFEST
from .remote import MANIFESTS_DIR, is_remote, read_remote_manifest, write_remote_manifest

HASH_BLOCK = 1 << 22


class StoreError(Exception):
    """A store that is missing, locked, corrupt or of another format version."""


def empty_manifest(image_longest: int | None = None) -> dict[str, Any]:
    """A store with no shard yet; ``image_longest`` is fixed for the store's whole life."""
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "image_longest": image_longest,
        "resized_quality": RESIZED_QUALITY if image_longest else None,
        "shards": {},
    }


def read_manifest(root: str | os.PathLike) -> dict[str, Any]:
    """The committed manifest: ``manifest.json`` locally, the newest generation remotely."""
    path = Path(root) / MANIFEST
    try:
        if is_remote(root):
            path = f"{root}/{MANIFESTS_DIR}/"
            manifest = read_remote_manifest(os.fspath(root))
            if manifest is None:
                raise FileNotFoundError(path)
        else:
            manifest = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        raise StoreError(f"{root} is not a sa1b_pack store: no {MANIFEST}") from None
    except orjson.JSONDecodeError as exc:
        raise StoreError(f"{path} is corrupt: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise StoreError(f"{path} is not a sa1b_pack manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise StoreError(
            f"{root} has store format version {manifest.get('format_version')}; this sa1b_pack "
            f"reads version {FORMAT_VERSION}: re-pack it, or install the matching version"
        )
    return manifest


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


def write_manifest(root: str | os.PathLike, manifest: dict[str, Any]) -> None:
    """Commit: replace manifest.json atomically, or write the next remote generation."""
    if is_remote(root):
        write_remote_manifest(os.fspath(root), manifest)
        return
    shards = dict(sorted(manifest["shards"].items()))
    body = {**manifest, "shards": shards}
    write_atomic(Path(root) / MANIFEST, orjson.dumps(body, option=orjson.OPT_INDENT_2))


def file_digest(path: str | os.PathLike, fs: Any = None) -> dict[str, Any]:
    """Size and sha256 of a file (local or on an fsspec filesystem), for manifest and verify."""
    digest = hashlib.sha256()
    size = 0
    with fs.open(path, "rb") if fs is not None else open(path, "rb") as f:
        while block := f.read(HASH_BLOCK):
            digest.update(block)
            size += len(block)
    return {"bytes": size, "sha256": digest.hexdigest()}


@contextmanager
def writer_lock(root: str | os.PathLike) -> Iterator[None]:
    """Exclusive right to pack into a store; StoreError at once if another process has it."""
    path = Path(root) / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            raise StoreError(
                f"{root} is being packed by pid {holder}; wait for it to finish"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)

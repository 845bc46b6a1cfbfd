"""Tar shards: shard-range parsing, locating shard files, and a one-pass member stream.

A shard is read once, sequentially (tarfile's seek mode for a local file, its stream mode
over fsspec for a URL; gzip is detected from the magic bytes, never the extension) and
nothing is extracted to disk. Members come out in
tar order; pairing ``sa_N.jpg`` with ``sa_N.json`` is the packer's job, across the whole shard.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import fsspec

from ..errors import ConfigError, SA1BPackError
from .sniff import SNIFF_BYTES, not_a_tar

SHARD_FILE = re.compile(r"^sa_(\d{6})\.tar$")
SAMPLE_MEMBER = re.compile(r"^sa_(\d+)\.(jpg|json)$")
SHARD_FOLDER = re.compile(r"^sa_\d+$")


class ShardError(SA1BPackError):
    """Bad input in a shard; the message names the shard and the member."""

    def __init__(self, shard: str, member: str | None, reason: str) -> None:
        self.shard, self.member, self.reason = shard, member, reason
        where = f"{shard}: {member}" if member else shard
        super().__init__(f"{where}: {reason}")


class TarDamage(ShardError):
    """The tar breaks off (truncated, or unreadable) after ``member``: the members before it
    were whole, so a packer told to skip bad input can keep their samples."""


def shard_name(index: int) -> str:
    return f"sa_{index:06d}"


def parse_shards(spec: str) -> list[int]:
    """'0-99', '3,7,10-12' or '5' -> sorted unique shard indices."""
    indices: set[int] = set()
    for part in spec.replace(" ", "").split(","):
        if not part:
            continue
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not match:
            raise ConfigError(f"bad shard range {part!r} in {spec!r}: use e.g. 0-99 or 3,7,10-12")
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) else first
        if last < first:
            raise ConfigError(f"bad shard range {part!r}: end before start")
        indices.update(range(first, last + 1))
    if not indices:
        raise ConfigError(f"no shards in {spec!r}")
    return sorted(indices)


def source_fs(src: str | os.PathLike) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, path) of a local folder or any fsspec URL (s3://, gs://, http://, ...)."""
    return fsspec.core.url_to_fs(os.fspath(src))


def find_shards(src: str | os.PathLike, indices: list[int]) -> dict[int, str]:
    """Location (path or URL) of each requested shard; FileNotFoundError listing every missing."""
    fs, root = source_fs(src)
    if not fs.isdir(root):
        raise FileNotFoundError(f"source folder {src} does not exist")
    base = os.fspath(src).rstrip("/")
    found = {i: f"{base}/{shard_name(i)}.tar" for i in indices}
    present = {p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(root, detail=False)}
    missing = [f"{shard_name(i)}.tar" for i in indices if f"{shard_name(i)}.tar" not in present]
    if missing:
        shown = ", ".join(missing[:10]) + (
            f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        )
        raise FileNotFoundError(f"missing shard files in {src}: {shown}")
    return found


def available_shards(src: str | os.PathLike) -> list[int]:
    """Indices of every sa_NNNNNN.tar in a folder (local or fsspec URL)."""
    fs, root = source_fs(src)
    names = (p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(root, detail=False))
    return sorted(int(m.group(1)) for name in names if (m := SHARD_FILE.fullmatch(name)))


@dataclass(frozen=True)
class Member:
    """A sample member (``kind`` 'jpg' or 'json') or a stray one (``kind`` None, with a reason)."""

    name: str
    key: str | None
    kind: str | None
    data: bytes | memoryview | None
    reason: str | None = None


def classify(name: str) -> tuple[str | None, str | None, str | None]:
    """(key, kind, None) for a sample member name; (None, None, reason) for a stray."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts:
        return None, None, "not a sample member"
    *folders, base = parts
    if len(folders) > 1 or (folders and not SHARD_FOLDER.fullmatch(folders[0])):
        return None, None, "not under the tar root or a shard-named folder"
    match = SAMPLE_MEMBER.fullmatch(base)
    if not match:
        return None, None, "not a sa_<N>.jpg or sa_<N>.json member"
    return f"sa_{match.group(1)}", match.group(2), None


GZIP_MAGIC = b"\x1f\x8b"
MAP_WINDOW = 16 << 20


class _Tar:
    """An open shard: tarfile for the headers, and each member's bytes either sliced from a
    read-only map of the file (a local uncompressed tar: no copy into Python) or read by
    tarfile (gzip, or any fsspec URL in stream mode ``r|*``, one forward pass).

    The map is a window of MAP_WINDOW bytes (or one member, if larger) moved forward as the
    members are read, populated in one call rather than page fault by page fault: a process
    maps about one window of a 10 GB shard, never the whole file."""

    def __init__(self, path: str, stack: contextlib.ExitStack) -> None:
        fs, local = source_fs(path)
        self.raw: BinaryIO | None = None
        self.window: memoryview | None = None
        self.window_start = self.window_end = self.size = 0
        if "file" in fs.protocol:
            raw = stack.enter_context(open(local, "rb"))
            if raw.read(2) != GZIP_MAGIC:
                self.raw, self.size = raw, os.fstat(raw.fileno()).st_size
            raw.seek(0)
            self.tar = stack.enter_context(tarfile.open(fileobj=raw, mode="r:*"))
        else:
            raw = stack.enter_context(fsspec.open(path, "rb"))
            self.tar = stack.enter_context(tarfile.open(fileobj=raw, mode="r|*"))

    def data(self, info: tarfile.TarInfo) -> bytes | memoryview | None:
        """The member's bytes, or None if the file ends inside them."""
        start, end = info.offset_data, info.offset_data + info.size
        if self.raw is None or info.sparse is not None:
            try:
                reader = self.tar.extractfile(info)
                data = reader.read() if reader else b""
            except (tarfile.ReadError, EOFError):  # the file or gzip stream ends inside it
                return None
            return data if len(data) == info.size else None
        if end > self.size:
            return None
        if not (self.window_start <= start and end <= self.window_end) or self.window is None:
            self._map_from(start, end)
        assert self.window is not None
        return self.window[start - self.window_start : end - self.window_start]

    def _map_from(self, start: int, end: int) -> None:
        assert self.raw is not None
        first = start - start % mmap.ALLOCATIONGRANULARITY
        last = min(self.size, max(end, first + MAP_WINDOW))
        flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
        view = mmap.mmap(self.raw.fileno(), last - first, flags=flags, prot=mmap.PROT_READ,
                         offset=first)  # fmt: skip
        # The old window is unmapped once no member's bytes point into it any more.
        self.window, self.window_start, self.window_end = memoryview(view), first, last


def iter_members(path: str | os.PathLike, shard: str | None = None) -> Iterator[Member]:
    """Stream a shard's members once, in tar order; ShardError if the tar is broken.

    A member's ``data`` may be a read-only memoryview of the mapped tar, valid while held:
    the packer writes, hashes, parses and decodes it without a copy."""
    shard = shard or os.fspath(path).rstrip("/").rsplit("/", 1)[-1]
    last = None
    try:
        with contextlib.ExitStack() as stack:
            source = _Tar(os.fspath(path), stack)
            tar = source.tar
            for info in tar:
                last = info.name
                if info.isdir():
                    continue
                if not info.isfile():
                    yield Member(info.name, None, None, None, "not a regular file")
                    continue
                key, kind, reason = classify(info.name)
                if reason:
                    yield Member(info.name, None, None, None, reason)
                    continue
                data = source.data(info)
                if data is None:
                    raise TarDamage(
                        shard, info.name, "the tar ends inside this member (truncated download?)"
                    )
                yield Member(info.name, key, kind, data)
            # A complete tar ends with a zero block after the last member; tarfile also stops
            # quietly at EOF where a header belongs (cut at or inside a header): not complete.
            if tar.fileobj.tell() < tar.offset + tarfile.BLOCKSIZE:
                raise TarDamage(
                    shard,
                    last,
                    "the tar ends after this member, without its end marker (truncated download?)",
                )
    except ShardError:
        raise
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        if last is not None:
            raise TarDamage(shard, last, f"unreadable tar after this member ({exc})") from None
        if (what := _sniff(path)) is not None:  # an error page saved as the shard, say
            raise ShardError(shard, None, what) from None
        raise ShardError(shard, None, f"unreadable tar at the start ({exc})") from None


def _sniff(path: str | os.PathLike) -> str | None:
    """What a file that is not a tar is instead, from its first bytes (None: no idea)."""
    try:
        with fsspec.open(os.fspath(path), "rb") as f:
            return not_a_tar(f.read(SNIFF_BYTES))
    except OSError:
        return None  # keep tarfile's message

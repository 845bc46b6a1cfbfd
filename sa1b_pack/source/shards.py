"""Tar shards: shard-range parsing, locating shard files, and a one-pass member stream.

A shard is read once, sequentially, in tarfile's stream mode (``r|*``: gzip is detected from
the magic bytes, never the extension) and nothing is extracted to disk. Members come out in
tar order; pairing ``sa_N.jpg`` with ``sa_N.json`` is the packer's job, across the whole shard.
"""

from __future__ import annotations

import os
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass

import fsspec

SHARD_FILE = re.compile(r"^sa_(\d{6})\.tar$")
SAMPLE_MEMBER = re.compile(r"^sa_(\d+)\.(jpg|json)$")
SHARD_FOLDER = re.compile(r"^sa_\d+$")


class ShardError(Exception):
    """Bad input in a shard; the message names the shard and the member."""

    def __init__(self, shard: str, member: str | None, reason: str) -> None:
        self.shard, self.member, self.reason = shard, member, reason
        where = f"{shard}: {member}" if member else shard
        super().__init__(f"{where}: {reason}")


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
            raise ValueError(f"bad shard range {part!r} in {spec!r}: use e.g. 0-99 or 3,7,10-12")
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) else first
        if last < first:
            raise ValueError(f"bad shard range {part!r}: end before start")
        indices.update(range(first, last + 1))
    if not indices:
        raise ValueError(f"no shards in {spec!r}")
    return sorted(indices)


def source_fs(src: str | os.PathLike) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, path) of a local folder or any fsspec URL (s3://, gs://, http://, ...)."""
    return fsspec.core.url_to_fs(os.fspath(src))


def source_size(url: str | os.PathLike) -> int:
    fs, path = source_fs(url)
    return int(fs.size(path))


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
    data: bytes | None
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


def iter_members(path: str | os.PathLike, shard: str | None = None) -> Iterator[Member]:
    """Stream a shard's members once, in tar order; ShardError if the tar is broken."""
    shard = shard or os.fspath(path).rstrip("/").rsplit("/", 1)[-1]
    last = None
    try:
        with (
            fsspec.open(os.fspath(path), "rb") as raw,
            tarfile.open(fileobj=raw, mode="r|*") as tar,
        ):
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
                reader = tar.extractfile(info)
                data = reader.read() if reader else b""
                if len(data) != info.size:
                    raise ShardError(shard, info.name, "truncated: member shorter than its header")
                yield Member(info.name, key, kind, data)
            # A complete tar ends with a zero block after the last member; tarfile also stops
            # quietly at EOF where a header belongs (cut at or inside a header): not complete.
            if tar.fileobj.tell() < tar.offset + tarfile.BLOCKSIZE:
                raise ShardError(
                    shard,
                    last,
                    "the tar ends after this member, without its end marker (truncated download?)",
                )
    except ShardError:
        raise
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        where = "after this member" if last else "at the start"
        raise ShardError(shard, last, f"unreadable tar {where} ({exc})") from None

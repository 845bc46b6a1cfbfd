"""Stores on object storage (s3://, gs://, any fsspec URL): commit by generation, read by range.

Object stores have no atomic rename, so a remote store is committed differently from a local
one: each shard's part is uploaded under a prefix of its own (``parts/sa_000000-<uuid>/``),
then a new manifest *generation* ``manifests/<generation:010d>.json`` is written. Objects are
never overwritten: a reader lists ``manifests/`` and reads the newest generation, which only
names parts that were completely uploaded before it was written. A crashed upload leaves an
unnamed prefix, removed by the next ``pack``. One packer per remote store (no lock there).

Reading fetches only the byte ranges a sample needs: the images table once per part, the
annotation rows of the sample (one Parquet row group, 1 request, cached), its JPEG and its
mask strings (1 request each). ``RemoteStats`` counts requests and bytes.
"""

from __future__ import annotations

import io
import os
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from .format import (
    ANNOTATIONS_PARQUET,
    COUNTS_PAYLOAD,
    FORMAT_NAME,
    IMAGES_PARQUET,
    JPEG_PAYLOAD,
    PART_FILES,
    RESIZED_PAYLOAD,
)

MANIFESTS_DIR = "manifests"
FOOTER_GUESS = 1 << 16  # bytes read at the end of a Parquet file: footer in one request
ROW_GROUP_CACHE = 8


def is_remote(root: str | os.PathLike) -> bool:
    protocol = fsspec.core.split_protocol(os.fspath(root))[0]
    return protocol not in (None, "file", "local")


@dataclass
class RemoteStats:
    """Requests and bytes fetched from the object store by this process."""

    requests: int = 0
    bytes: int = 0


STATS = RemoteStats()


def _fetch(fs: fsspec.AbstractFileSystem, path: str, start: int, end: int) -> bytes:
    data = fs.cat_file(path, start=start, end=end)
    STATS.requests += 1
    STATS.bytes += len(data)
    return data


def read_remote_manifest(root: str) -> dict[str, Any] | None:
    """The newest manifest generation, or None if the store has none yet."""
    fs, path = fsspec.core.url_to_fs(root)
    try:
        names = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(f"{path}/{MANIFESTS_DIR}", detail=False))
    except FileNotFoundError:
        return None
    generations = [n for n in names if n.endswith(".json") and n[:-5].isdigit()]
    if not generations:
        return None
    data = fs.cat_file(f"{path}/{MANIFESTS_DIR}/{generations[-1]}")
    manifest = orjson.loads(data)
    manifest["generation"] = int(generations[-1][:-5])
    return manifest


def write_remote_manifest(root: str, manifest: dict[str, Any]) -> None:
    """Write the next generation (a new object; nothing is overwritten)."""
    fs, path = fsspec.core.url_to_fs(root)
    manifest["generation"] = manifest.get("generation", 0) + 1
    body = {k: v for k, v in manifest.items() if k != "generation"}
    body["shards"] = dict(sorted(body["shards"].items()))
    name = f"{path}/{MANIFESTS_DIR}/{manifest['generation']:010d}.json"
    fs.pipe_file(name, orjson.dumps(body, option=orjson.OPT_INDENT_2))


def upload_part(local: Path, root: str, name: str) -> str:
    """Upload a finished local part under a fresh prefix; returns its path in the store."""
    fs, path = fsspec.core.url_to_fs(root)
    prefix = f"parts/{name}-{uuid.uuid4().hex[:8]}"
    for f in PART_FILES:
        fs.put_file(str(local / f), f"{path}/{prefix}/{f}")
    return prefix


def drop_unlisted_parts(root: str, manifest: dict[str, Any]) -> None:
    """Remove prefixes of uploads a crash left unnamed by any manifest generation."""
    fs, path = fsspec.core.url_to_fs(root)
    listed = {e["path"] for e in manifest["shards"].values()}
    try:
        prefixes = fs.ls(f"{path}/parts", detail=False)
    except FileNotFoundError:
        return
    for prefix in prefixes:
        if f"parts/{prefix.rstrip('/').rsplit('/', 1)[-1]}" not in listed:
            fs.rm(prefix, recursive=True)


class _RangeFile(io.RawIOBase):
    """A read-only file over an object: reads are counted range requests, footer prefetched."""

    def __init__(self, fs: fsspec.AbstractFileSystem, path: str, size: int) -> None:
        self.fs, self.path, self.size, self.pos = fs, path, size, 0
        start = max(0, size - FOOTER_GUESS)
        self.tail_start, self.tail = start, _fetch(fs, path, start, size)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.pos, 2: self.size}[whence]
        self.pos = base + offset
        return self.pos

    def tell(self) -> int:
        return self.pos

    def readinto(self, buffer: Any) -> int:
        end = min(self.pos + len(buffer), self.size)
        if self.pos >= self.tail_start:
            data = self.tail[self.pos - self.tail_start : end - self.tail_start]
        else:
            data = _fetch(self.fs, self.path, self.pos, end)
        buffer[: len(data)] = data
        self.pos += len(data)
        return len(data)


class RemoteBytes:
    """A byte range of a payload object, fetched on first use (one request)."""

    def __init__(self, fs: fsspec.AbstractFileSystem, path: str, start: int, size: int) -> None:
        self.fs, self.path, self.start, self.size = fs, path, start, size

    @cached_property
    def data(self) -> np.ndarray:
        if self.size == 0:
            return np.empty(0, np.uint8)
        raw = _fetch(self.fs, self.path, self.start, self.start + self.size)
        return np.frombuffer(raw, np.uint8)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, key: slice) -> np.ndarray:
        return self.data[key]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return self.data


class RemotePart:
    """A part on object storage: the images table in memory, everything else by range."""

    def __init__(self, root: str, name: str, entry: dict[str, Any]) -> None:
        self.fs, base = fsspec.core.url_to_fs(root)
        self.name = name
        self.folder = f"{base}/{entry['path']}"
        images = self._file(IMAGES_PARQUET, entry).read()
        for column in ("image_id", "width", "height", "jpeg_offset", "jpeg_size",
                       "mask_start", "mask_count", "resized_offset", "resized_size"):  # fmt: skip
            setattr(self, column, images.column(column).to_numpy())
        self.file_name = images.column("file_name").combine_chunks()
        self.image_extra = images.column("extra").combine_chunks()
        self._entry = entry
        self._groups: OrderedDict[int, pa.Table] = OrderedDict()

    def _file(self, name: str, entry: dict[str, Any]) -> pq.ParquetFile:
        size = entry["files"][name]["bytes"]
        return pq.ParquetFile(_RangeFile(self.fs, f"{self.folder}/{name}", size), pre_buffer=True)

    @cached_property
    def _annotations(self) -> pq.ParquetFile:
        return self._file(ANNOTATIONS_PARQUET, self._entry)

    @cached_property
    def _group_starts(self) -> np.ndarray:
        meta = self._annotations.metadata
        rows = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
        return np.concatenate([[0], np.cumsum(rows)]).astype(np.int64)

    def _group(self, g: int) -> pa.Table:
        table = self._groups.pop(g, None)
        if table is None:
            table = self._annotations.read_row_group(g)
            if len(self._groups) >= ROW_GROUP_CACHE:
                self._groups.popitem(last=False)
        self._groups[g] = table
        return table

    def _rows(self, lo: int, n: int) -> pa.Table:
        starts = self._group_starts
        first = int(np.searchsorted(starts, lo, side="right")) - 1
        last = int(np.searchsorted(starts, lo + max(n, 1) - 1, side="right")) - 1
        tables = [self._group(g) for g in range(first, last + 1)]
        return pa.concat_tables(tables).slice(lo - int(starts[first]), n)

    def _column(self, name: str) -> np.ndarray:
        return self._annotations.read(columns=[name]).column(name).to_numpy()

    @cached_property
    def predicted_iou(self) -> np.ndarray:  # whole columns, for index-time filters
        return self._column("predicted_iou")

    @cached_property
    def stability_score(self) -> np.ndarray:
        return self._column("stability_score")

    @cached_property
    def area(self) -> np.ndarray:
        return self._column("area")

    def window(self, local: int) -> _Window:
        """Everything sample ``local`` needs, as a one-image part Sample can read."""
        return _Window(self, local)


class _Window:
    """One sample of a remote part, laid out like a local Part with a single image."""

    def __init__(self, part: RemotePart, local: int) -> None:
        self.name = part.name
        lo, n = int(part.mask_start[local]), int(part.mask_count[local])
        for column in ("image_id", "width", "height", "jpeg_size", "resized_size"):
            setattr(self, column, getattr(part, column)[local : local + 1])
        self.file_name = part.file_name[local : local + 1]
        self.image_extra = part.image_extra[local : local + 1]
        self.mask_start = np.zeros(1, np.uint64)
        self.mask_count = np.array([n], np.uint32)
        self.jpeg_offset = np.zeros(1, np.uint64)
        self.resized_offset = np.zeros(1, np.uint64)
        jpeg_at, resized_at = int(part.jpeg_offset[local]), int(part.resized_offset[local])
        self.jpeg = RemoteBytes(part.fs, f"{part.folder}/{JPEG_PAYLOAD}", jpeg_at,
                                int(part.jpeg_size[local]))  # fmt: skip
        self.resized = RemoteBytes(part.fs, f"{part.folder}/{RESIZED_PAYLOAD}", resized_at,
                                   int(part.resized_size[local]))  # fmt: skip
        rows = part._rows(lo, n)
        col = {name: rows.column(name).combine_chunks() for name in rows.column_names}
        self.ids = col["id"].to_numpy()
        self.area = col["area"].to_numpy()
        self.predicted_iou = col["predicted_iou"].to_numpy()
        self.stability_score = col["stability_score"].to_numpy()
        self.bbox = col["bbox"].flatten().to_numpy().reshape(-1, 4)
        self.crop_box = col["crop_box"].flatten().to_numpy().reshape(-1, 4)
        points = col["point_coords"]
        offsets = points.offsets.to_numpy()
        self.point_offsets = offsets - offsets[0]
        self.points = points.flatten().flatten().to_numpy().reshape(-1, 2)
        self.mask_extra = col["extra"]
        starts = col["counts_offset"].to_numpy().astype(np.int64)
        sizes = col["counts_size"].to_numpy().astype(np.int64)
        first = int(starts.min()) if n else 0
        end = int((starts + sizes).max()) if n else 0
        self.counts = RemoteBytes(part.fs, f"{part.folder}/{COUNTS_PAYLOAD}", first, end - first)
        self.counts_offset = (starts - first).astype(np.uint64)
        self.counts_size = sizes.astype(np.uint32)


def is_store(root: str) -> bool:
    manifest = read_remote_manifest(root)
    return manifest is not None and manifest.get("format") == FORMAT_NAME

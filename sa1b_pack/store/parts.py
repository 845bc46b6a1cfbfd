"""Reading one committed part: the protocol every backend's part implements, and the local,
memory-mapped one.

A part hands out per-image columns whole (``images``), per-mask columns whole
(``mask_column``, for filters over a shard) or for a row range (``mask_slice``, one sample's
masks; ``mask_points`` for the ragged prompt points: offsets of the rows into the points),
payload byte ranges (``payload``) and COCO strings (``strings``). ``Sample``, the
training index and ``verify`` are written once against this; ``ranged.RangePart`` implements
it with byte-range requests on object storage. Numeric columns are numpy arrays, strings
Arrow arrays, and the ragged ``point_coords`` an (offsets, (n, 2) values) pair.

Opening a mapped part checks what is cheap (sizes against the manifest, Arrow structure,
every offset inside its payload), so a truncated or corrupt part is a clear StoreError on
open, never a crash later.
"""

from __future__ import annotations

import mmap
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa

from ..source.columns import IMAGE_COLUMNS, MASK_COLUMNS, TABLES, Column
from .errors import StoreError
from .format import (
    ANNOTATIONS_ARROW,
    COUNTS_PAYLOAD,
    IMAGES_ARROW,
    PAYLOAD_SPANS,
    PAYLOADS,
)

Columns = Mapping[str, Any]


class Part(Protocol):
    name: str
    images: Columns  # every per-image column, whole

    def mask_column(self, name: str) -> np.ndarray: ...

    def mask_slice(self, name: str, lo: int, n: int) -> Any: ...

    def mask_points(self, lo: int, n: int) -> tuple[np.ndarray, np.ndarray]: ...

    def payload(self, file: str, start: int, size: int) -> np.ndarray: ...

    def strings(self, offsets: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


def _array(table: pa.Table, name: str) -> pa.Array:
    col = table.column(name)
    return col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()


def column_values(array: pa.Array, column: Column) -> Any:
    """A column as readers hold it: a numpy view (zero-copy where Arrow allows), an Arrow
    string array, or (offsets, (n, 2) values) for the ragged points."""
    if column.ragged:
        return array.offsets.to_numpy(), array.values.flatten().to_numpy().reshape(-1, 2)
    if column.width is not None:
        return array.flatten().to_numpy().reshape(-1, column.width)
    if not column.numeric:
        return array
    return array.to_numpy()


def table_columns(table: pa.Table, columns: tuple[Column, ...]) -> dict[str, Any]:
    return {c.name: column_values(_array(table, c.name), c) for c in columns}


def _read_arrow(path: Path) -> pa.Table:
    try:
        table = pa.ipc.open_file(pa.memory_map(str(path), "r")).read_all()
        table.validate(full=True)  # offsets of strings/lists in bounds: no crash on access
        return table
    except (OSError, pa.ArrowInvalid) as exc:
        raise StoreError(f"cannot read {path}: {exc}") from None


def _payload(path: Path, expected: int) -> np.ndarray:
    size = path.stat().st_size if path.exists() else -1
    if size != expected:
        raise StoreError(f"{path} has {size} bytes, the manifest says {expected}")
    if expected == 0:
        return np.empty(0, np.uint8)
    return np.memmap(path, dtype=np.uint8, mode="r")


def check_spans(where: str, tables: Mapping[str, Columns], sizes: Mapping[str, int]) -> None:
    """Every payload span and every image's mask rows lie inside what they point into."""
    for file, table, offset, size in PAYLOAD_SPANS:
        _check_span(where, f"{file} offsets", tables[table][offset], tables[table][size],
                    sizes[file])  # fmt: skip
    masks = len(tables["annotations"]["id"])
    images = tables["images"]
    _check_span(where, "mask rows", images["mask_start"], images["mask_count"], masks)


def _check_span(where: str, what: str, starts: np.ndarray, sizes: np.ndarray, end: int) -> None:
    if len(starts) and int((starts.astype(np.uint64) + sizes.astype(np.uint64)).max()) > end:
        raise StoreError(f"{where}: {what} point past the end: corrupt store")


def prefetch(payload: np.ndarray, start: int, size: int) -> None:
    """Ask the kernel to read a byte range of a mapped payload in one go (MADV_WILLNEED).

    Cold, a decoder touching a memory-mapped JPEG faults it in page by page; advising the
    range first lets the kernel read it in one request. Warm it is one cheap syscall.
    """
    mapped = getattr(payload, "_mmap", None)
    if mapped is None or size <= 0:
        return
    first = start // mmap.PAGESIZE * mmap.PAGESIZE
    mapped.madvise(mmap.MADV_WILLNEED, first, start + size - first)


class MappedPart:
    """A part in a local folder: tables and payloads memory-mapped, columns as views."""

    def __init__(self, folder: Path, name: str, entry: dict[str, Any]) -> None:
        self.name = name
        files = {"images": IMAGES_ARROW, "annotations": ANNOTATIONS_ARROW}
        tables = {table: _read_arrow(folder / files[table]) for table in TABLES}
        if (tables["images"].num_rows, tables["annotations"].num_rows) != (
            entry["images"],
            entry["masks"],
        ):
            raise StoreError(f"{folder}: table rows disagree with the manifest")
        self.images = table_columns(tables["images"], IMAGE_COLUMNS)
        self._masks = table_columns(tables["annotations"], MASK_COLUMNS)
        self._payloads = {f: _payload(folder / f, entry[key]) for f, key in PAYLOADS.items()}
        sizes = {f: len(data) for f, data in self._payloads.items()}
        check_spans(str(folder), {"images": self.images, "annotations": self._masks}, sizes)

    def mask_column(self, name: str) -> np.ndarray:
        return self._masks[name]

    def mask_slice(self, name: str, lo: int, n: int) -> Any:
        return self._masks[name][lo : lo + n]

    def mask_points(self, lo: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        offsets, points = self._masks["point_coords"]
        return offsets[lo : lo + n + 1], points

    def payload(self, file: str, start: int, size: int) -> np.ndarray:
        data = self._payloads[file]
        prefetch(data, start, size)
        return data[start : start + size]

    def strings(self, offsets: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(self._payloads[COUNTS_PAYLOAD]), offsets

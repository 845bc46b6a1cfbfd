"""Reading one committed part: the protocol every backend's part implements, and the local,
memory-mapped one.

A part hands out per-image columns whole (``images``), per-mask columns whole
(``mask_column``, for filters over a shard) or for a row range (``mask_slice``, one sample's
masks; ``mask_points`` for the ragged prompt points: offsets of the rows into the points),
payload byte ranges (``payload``), COCO strings (``strings``) and one image's row of an
attached array (``attached``, write/attach.py). ``Sample``, the
training index and ``verify`` are written once against this; ``ranged.RangePart`` implements
it with byte-range requests on object storage. Numeric columns are numpy arrays, strings
Arrow arrays, and the ragged ``point_coords`` an (offsets, (n, 2) values) pair.

Opening a mapped part checks what is cheap (sizes against the manifest, Arrow structure,
every offset inside its table or payload), so a truncated or corrupt part is a clear
StoreError on open, never a crash later. Its files are mapped and their descriptors closed at
once: an open part costs address space, never a file descriptor.
"""

from __future__ import annotations

import ctypes
import mmap
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa

from ..errors import StoreError
from ..format.columns import IMAGE_COLUMNS, MASK_COLUMNS, TABLES, Column
from ..format.files import (
    ANNOTATIONS_ARROW,
    COUNTS_PAYLOAD,
    IMAGES_ARROW,
    PAYLOAD_SPANS,
    PAYLOADS,
)

Columns = Mapping[str, Any]


class Part(Protocol):
    name: str
    entry: dict[str, Any]  # the part's manifest entry
    images: Columns  # every per-image column, whole

    def mask_column(self, name: str) -> np.ndarray: ...

    def mask_slice(self, name: str, lo: int, n: int) -> Any: ...

    def mask_points(self, lo: int, n: int) -> tuple[np.ndarray, np.ndarray]: ...

    def payload(self, file: str, start: int, size: int) -> np.ndarray: ...

    def strings(self, offsets: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...

    def attached(self, name: str, local: int) -> np.ndarray: ...


def attached_spec(where: str, entry: dict[str, Any], name: str) -> tuple[str, np.dtype, tuple]:
    """(file, dtype, per-image shape) of an array attached to a part; StoreError if the part
    has none of that name."""
    spec = entry.get("attached", {}).get(name)
    if spec is None:
        have = ", ".join(sorted(entry.get("attached", {}))) or "none"
        raise StoreError(f"{where}: no attached array {name!r} (attached: {have}); "
                         "attach it (sa1b-pack attach) to every shard first")  # fmt: skip
    return spec["file"], np.dtype(spec["dtype"]), tuple(spec["shape"])


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


def _map(path: Path) -> pa.Buffer:
    """Map a file and close its descriptor at once: the mapping lives as long as a buffer (or
    a numpy view of one) refers to it, so a process holds no descriptor per part."""
    with pa.memory_map(str(path), "r") as source:
        return source.read_buffer()


def _offsets_in_bounds(array: pa.Array) -> bool:
    """Offsets of a string or list column non-decreasing and inside their data: the part of
    Arrow's full validation that keeps a corrupt file from crashing a read, at numpy speed
    (the rest of it, UTF-8 included, is verify's)."""
    buffers = array.buffers()  # [validity, int32 offsets, data or the child's buffers...]
    if buffers[1] is None or buffers[1].size < 4 * (len(array) + 1):
        return False
    offsets = np.frombuffer(buffers[1], np.int32)[array.offset : array.offset + len(array) + 1]
    if pa.types.is_string(array.type):
        data = array.buffers()[2]
        end = data.size if data is not None else 0
    else:
        end = len(array.values)
    return bool(
        len(offsets) == len(array) + 1
        and (not len(array) or (offsets[0] >= 0 and offsets[-1] <= end))
        and (np.diff(offsets) >= 0).all()
    )


def _read_arrow(path: Path, columns: tuple[Column, ...]) -> pa.Table:
    """A table of a part, memory-mapped; StoreError if its structure cannot be read safely.

    Checked on open: the IPC structure and buffer sizes (Arrow's cheap ``validate``) and
    every variable-length column's offsets; what only costs time to find (bad UTF-8, values
    that disagree with the source) is left to ``verify``.
    """
    try:
        table = pa.ipc.open_file(pa.BufferReader(_map(path))).read_all()
        table.validate()
    except (OSError, pa.ArrowInvalid) as exc:
        raise StoreError(f"cannot read {path}: {exc}") from None
    for column in columns:
        if not column.numeric and not _offsets_in_bounds(_array(table, column.name)):
            raise StoreError(f"cannot read {path}: offsets of {column.name} out of bounds")
    return table


def _payload(path: Path, expected: int) -> np.ndarray:
    size = path.stat().st_size if path.exists() else -1
    if size != expected:
        raise StoreError(f"{path} has {size} bytes, the manifest says {expected}")
    if expected == 0:
        return np.empty(0, np.uint8)
    return np.frombuffer(_map(path), np.uint8)


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


_libc = ctypes.CDLL(None, use_errno=True)
_libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)


def prefetch(payload: np.ndarray, start: int, size: int) -> None:
    """Ask the kernel to read a byte range of a mapped payload in one go (MADV_WILLNEED).

    Cold, a decoder touching a memory-mapped JPEG faults it in page by page; advising the
    range first lets the kernel read it in one request. Warm it is one cheap syscall; on
    memory that is not a file mapping it does nothing.
    """
    if size <= 0 or start < 0 or start + size > payload.nbytes:
        return
    address = payload.ctypes.data + start
    first = address // mmap.PAGESIZE * mmap.PAGESIZE
    _libc.madvise(first, address + size - first, mmap.MADV_WILLNEED)


class MappedPart:
    """A part in a local folder: tables and payloads memory-mapped, columns as views."""

    def __init__(self, folder: Path, name: str, entry: dict[str, Any]) -> None:
        self.name, self.entry, self.folder = name, entry, folder
        self._attached: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # name -> (bytes, rows)
        files = {"images": IMAGES_ARROW, "annotations": ANNOTATIONS_ARROW}
        tables = {t: _read_arrow(folder / files[t], columns) for t, columns in TABLES.items()}
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

    def attached(self, name: str, local: int) -> np.ndarray:
        mapped = self._attached.get(name)
        if mapped is None:  # mapped on first use: (images, *shape), read-only
            file, dtype, shape = attached_spec(self.name, self.entry, name)
            size = self.entry["files"][file]["bytes"]
            if size != self.entry["images"] * dtype.itemsize * int(np.prod(shape)):
                raise StoreError(f"{self.name}: {file}: {size} bytes, not one row per image")
            data = _payload(self.folder / file, size)
            mapped = self._attached[name] = (data, data.view(dtype).reshape(-1, *shape))
        data, rows = mapped
        row = rows[local]
        prefetch(data, local * row.nbytes, row.nbytes)
        return row

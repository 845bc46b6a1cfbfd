"""A part on object storage, read by byte range: the part protocol of parts.py over requests.

The images table is fetched once per part (it is small); a sample's mask rows come from the
annotations Parquet one row group at a time (~80 SA-1B images each, a few cached); a JPEG is
one range request, a sample's COCO strings one more, its row of an attached array one more.
Requests are counted in the store's ``storage.stats``.
"""

from __future__ import annotations

import io
from collections import OrderedDict
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..format.columns import IMAGE_COLUMNS, MASK_COLUMNS
from ..format.files import ANNOTATIONS_PARQUET, COUNTS_PAYLOAD, IMAGES_PARQUET
from .parts import Columns, attached_spec, column_values, table_columns

if TYPE_CHECKING:
    from ..storage.objects import ObjectStorage

FOOTER_GUESS = 1 << 16  # bytes read at the end of a Parquet file: footer in one request
ROW_GROUP_CACHE = 8
MASK_BY_NAME = {c.name: c for c in MASK_COLUMNS}


class _RangeFile(io.RawIOBase):
    """A read-only file over an object: reads are counted range requests, footer prefetched."""

    def __init__(self, storage: ObjectStorage, path: str, size: int) -> None:
        self.storage, self.path, self.size, self.pos = storage, path, size, 0
        start = max(0, size - FOOTER_GUESS)
        self.tail_start, self.tail = start, storage.fetch(path, start, size)

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
            data = self.storage.fetch(self.path, self.pos, end)
        buffer[: len(data)] = data
        self.pos += len(data)
        return len(data)


class RangePart:
    """A part on object storage: the images table in memory, everything else by range."""

    def __init__(self, storage: ObjectStorage, name: str, entry: dict[str, Any]) -> None:
        self.storage, self.name, self.entry = storage, name, entry
        self._entry = entry
        self.folder = storage.part_path(name, entry)
        self.images = table_columns(self._parquet(IMAGES_PARQUET).read(), IMAGE_COLUMNS)
        self._groups: OrderedDict[int, pa.Table] = OrderedDict()
        self._whole: dict[str, np.ndarray] = {}
        self._rows: Columns = {}
        self._rows_of: tuple[int, int] | None = None

    def _parquet(self, file: str) -> pq.ParquetFile:
        size = self._entry["files"][file]["bytes"]
        return pq.ParquetFile(_RangeFile(self.storage, f"{self.folder}/{file}", size),
                              pre_buffer=True)  # fmt: skip

    @cached_property
    def _annotations(self) -> pq.ParquetFile:
        return self._parquet(ANNOTATIONS_PARQUET)

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

    def mask_column(self, name: str) -> np.ndarray:
        if name not in self._whole:
            table = self._annotations.read(columns=[name])
            self._whole[name] = column_values(table.column(name).combine_chunks(),
                                              MASK_BY_NAME[name])  # fmt: skip
        return self._whole[name]

    def mask_slice(self, name: str, lo: int, n: int) -> Any:
        if self._rows_of != (lo, n):  # one sample's rows, fetched once for all its fields
            self._rows, self._rows_of = self._mask_rows(lo, n), (lo, n)
        return self._rows[name]

    def mask_points(self, lo: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        return self.mask_slice("point_coords", lo, n)

    def _mask_rows(self, lo: int, n: int) -> Columns:
        starts = self._group_starts
        first = int(np.searchsorted(starts, lo, side="right")) - 1
        last = int(np.searchsorted(starts, lo + max(n, 1) - 1, side="right")) - 1
        tables = [self._group(g) for g in range(first, last + 1)]
        rows = pa.concat_tables(tables).slice(lo - int(starts[first]), n).combine_chunks()
        return table_columns(rows, MASK_COLUMNS)

    def payload(self, file: str, start: int, size: int) -> np.ndarray:
        if size <= 0:
            return np.empty(0, np.uint8)
        data = self.storage.fetch(f"{self.folder}/{file}", start, start + size)
        return np.frombuffer(data, np.uint8)

    def strings(self, offsets: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The span holding every string asked for, in one request; offsets into it."""
        offsets = np.asarray(offsets, np.int64)
        if not len(offsets):
            return np.empty(0, np.uint8), offsets
        first = int(offsets.min())
        end = int((offsets + np.asarray(sizes, np.int64)).max())
        return self.payload(COUNTS_PAYLOAD, first, end - first), offsets - first

    def attached(self, name: str, local: int) -> np.ndarray:
        file, dtype, shape = attached_spec(self.name, self._entry, name)
        size = dtype.itemsize * int(np.prod(shape))
        row = self.payload(file, local * size, size)
        return row.view(dtype).reshape(shape)

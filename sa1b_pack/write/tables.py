"""A shard's collected records -> the images and annotations tables, as Parquet and Arrow IPC.

Both tables are built by looping over the column list (format/columns.py): copied columns
come from the parsed annotations, layout columns from where the packer put the payloads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..format.columns import IMAGE_COLUMNS, MASK_COLUMNS, SCHEMAS, Column
from ..source.annotation import ImageAnnotations

PARQUET_ROW_GROUP = 1 << 13  # ~80 SA-1B images: one remote read fetches a sample's masks


@dataclass
class JpegRecord:
    member: str
    offset: int
    size: int
    width: int
    height: int
    resized: tuple[int, int, int, int] = (0, 0, 0, 0)  # offset, size, width, height


@dataclass
class JsonRecord:
    member: str
    ann: ImageAnnotations
    counts_offsets: np.ndarray


def _arrow(values: Any, column: Column) -> pa.Array:
    if column.width is not None:
        flat = pa.array(np.asarray(values).reshape(-1), column.type.value_type)
        return pa.FixedSizeListArray.from_arrays(flat, column.width)
    if column.ragged:
        offsets, points = values
        inner = pa.FixedSizeListArray.from_arrays(pa.array(points.reshape(-1), pa.float64()), 2)
        return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), inner)
    return pa.array(values, column.type)


def _table(columns: tuple[Column, ...], values: dict[str, Any], table_schema: pa.Schema):
    return pa.table({c.name: _arrow(values[c.name], c) for c in columns}, schema=table_schema)


def _concat(anns: list[ImageAnnotations], column: Column) -> np.ndarray:
    parts = [a.masks[column.name] for a in anns]
    empty = np.empty((0, column.width) if column.width else 0, column.numpy_dtype)
    return np.concatenate(parts) if parts else empty


def build_tables(
    order: list[str], jpegs: dict[str, JpegRecord], jsons: dict[str, JsonRecord]
) -> tuple[pa.Table, pa.Table]:
    anns = [jsons[k].ann for k in order]
    counts = np.array([len(a) for a in anns], np.int64)
    resized = np.array([jpegs[k].resized for k in order], np.int64).reshape(-1, 4)
    images: dict[str, Any] = {
        **{c.name: [a.image[c.name] for a in anns] for c in IMAGE_COLUMNS if c.source},
        "jpeg_offset": [jpegs[k].offset for k in order],
        "jpeg_size": [jpegs[k].size for k in order],
        "mask_start": np.cumsum(counts) - counts,
        "mask_count": counts,
        "resized_offset": resized[:, 0],
        "resized_size": resized[:, 1],
        "resized_width": resized[:, 2],
        "resized_height": resized[:, 3],
        "jpeg_member": [jpegs[k].member for k in order],
        "json_member": [jsons[k].member for k in order],
        "extra": [a.extra for a in anns],
    }
    point_counts = np.concatenate([a.point_counts for a in anns] or [[]]).astype(np.int64)
    points = np.concatenate([a.points for a in anns] or [np.empty((0, 2))])
    masks: dict[str, Any] = {
        **{c.name: _concat(anns, c) for c in MASK_COLUMNS if c.source and not c.ragged},
        "image_id": np.repeat([a.image_id for a in anns], counts).astype(np.int64),
        "point_coords": (np.concatenate([[0], np.cumsum(point_counts)]), points),
        "counts_offset": np.concatenate([jsons[k].counts_offsets for k in order] or [[]]),
        "counts_size": np.concatenate([a.counts_sizes for a in anns] or [[]]).astype(np.uint32),
        "extra": [v for a in anns for v in a.extras],
    }
    return (
        _table(IMAGE_COLUMNS, images, SCHEMAS["images"]),
        _table(MASK_COLUMNS, masks, SCHEMAS["annotations"]),
    )


def write_table(table: pa.Table, parquet: Path, arrow: Path) -> tuple[Path, Path]:
    """Write both files of one table (not yet synced: the caller makes them durable)."""
    table = table.combine_chunks()
    pq.write_table(table, parquet, compression="zstd", row_group_size=PARQUET_ROW_GROUP)
    with pa.OSFile(str(arrow), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=max(table.num_rows, 1))
    return parquet, arrow

"""A shard's collected records -> the images and annotations tables, as Parquet and Arrow IPC."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..source.annotation import ImageAnnotations
from .format import ANNOTATIONS_SCHEMA, IMAGES_SCHEMA

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


def _box_array(values: np.ndarray) -> pa.Array:
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1), pa.float64()), 4)


def build_tables(
    order: list[str], jpegs: dict[str, JpegRecord], jsons: dict[str, JsonRecord]
) -> tuple[pa.Table, pa.Table]:
    anns = [jsons[k].ann for k in order]
    counts = np.array([len(a) for a in anns], np.int64)
    starts = (np.cumsum(counts) - counts).astype(np.uint64)
    images = pa.table(
        {
            "image_id": pa.array([a.image_id for a in anns], pa.int64()),
            "file_name": pa.array([a.file_name for a in anns], pa.string()),
            "width": pa.array([a.width for a in anns], pa.int32()),
            "height": pa.array([a.height for a in anns], pa.int32()),
            "jpeg_offset": pa.array([jpegs[k].offset for k in order], pa.uint64()),
            "jpeg_size": pa.array([jpegs[k].size for k in order], pa.uint64()),
            "mask_start": pa.array(starts, pa.uint64()),
            "mask_count": pa.array(counts, pa.uint32()),
            **{
                name: pa.array([jpegs[k].resized[c] for k in order], IMAGES_SCHEMA.field(name).type)
                for c, name in enumerate(
                    ("resized_offset", "resized_size", "resized_width", "resized_height")
                )
            },
            "jpeg_member": pa.array([jpegs[k].member for k in order], pa.string()),
            "json_member": pa.array([jsons[k].member for k in order], pa.string()),
            "extra": pa.array([a.extra for a in anns], pa.string()),
        },
        schema=IMAGES_SCHEMA,
    )

    def cat(name: str, dtype: Any, width: int | None = None) -> np.ndarray:
        parts = [getattr(a, name) for a in anns]
        empty = np.empty((0,) if width is None else (0, width), dtype)
        return np.concatenate(parts).astype(dtype, copy=False) if parts else empty

    point_counts = cat("point_counts", np.int64)
    point_offsets = np.concatenate([[0], np.cumsum(point_counts)]).astype(np.int32)
    points = cat("points", np.float64, 2)
    seg_size = cat("seg_size", np.int32, 2)
    counts_sizes = [len(c) for a in anns for c in a.counts]
    annotations = pa.table(
        {
            "image_id": pa.array(np.repeat([a.image_id for a in anns], counts), pa.int64()),
            "id": pa.array(cat("ids", np.int64), pa.int64()),
            "bbox": _box_array(cat("bbox", np.float64, 4)),
            "area": pa.array(cat("area", np.int64), pa.int64()),
            "predicted_iou": pa.array(cat("predicted_iou", np.float64), pa.float64()),
            "stability_score": pa.array(cat("stability_score", np.float64), pa.float64()),
            "point_coords": pa.ListArray.from_arrays(
                pa.array(point_offsets, pa.int32()),
                pa.FixedSizeListArray.from_arrays(pa.array(points.reshape(-1), pa.float64()), 2),
            ),
            "crop_box": _box_array(cat("crop_box", np.float64, 4)),
            "seg_height": pa.array(seg_size[:, 0], pa.int32()),
            "seg_width": pa.array(seg_size[:, 1], pa.int32()),
            "counts_offset": pa.array(
                np.concatenate([jsons[k].counts_offsets for k in order] or [[]]), pa.uint64()
            ),
            "counts_size": pa.array(counts_sizes, pa.uint32()),
            "extra": pa.array([v for a in anns for v in a.extras], pa.string()),
        },
        schema=ANNOTATIONS_SCHEMA,
    )
    return images, annotations


def write_table(table: pa.Table, parquet: Path, arrow: Path) -> None:
    table = table.combine_chunks()
    pq.write_table(table, parquet, compression="zstd", row_group_size=PARQUET_ROW_GROUP)
    with pa.OSFile(str(arrow), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=max(table.num_rows, 1))
    for path in (parquet, arrow):
        with open(path, "rb+") as f:
            os.fsync(f.fileno())

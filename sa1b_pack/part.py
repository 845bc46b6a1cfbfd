"""One shard -> one complete part folder, written in a temp folder and renamed into place.

Members are paired by key across the whole shard: JPEG bytes and mask strings go to the payload
files the moment their member is read, and only small per-image records stay in memory until
the end, when the tables are written in image-id order. The caller commits the part by
listing it in the manifest.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import simplejpeg

from .annotation import AnnotationError, ImageAnnotations, parse_annotation_json
from .format import (
    ANNOTATIONS_ARROW,
    ANNOTATIONS_PARQUET,
    ANNOTATIONS_SCHEMA,
    COUNTS_PAYLOAD,
    IMAGES_ARROW,
    IMAGES_PARQUET,
    IMAGES_SCHEMA,
    JPEG_PAYLOAD,
    PART_FILES,
    PARTS_DIR,
    RESIZED_PAYLOAD,
)
from .images import encode_jpeg, resize_longest
from .manifest import file_digest, fsync_dir
from .shards import ShardError, iter_members, shard_name

PARQUET_ROW_GROUP = 1 << 17


@dataclass
class _Jpeg:
    member: str
    offset: int
    size: int
    width: int
    height: int
    resized: tuple[int, int, int, int] = (0, 0, 0, 0)  # offset, size, width, height


@dataclass
class _Json:
    member: str
    ann: ImageAnnotations
    counts_offsets: np.ndarray


@dataclass
class PartResult:
    """A written (not yet committed) part: its manifest entry and what was left out."""

    entry: dict[str, Any]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (member, reason)


def _jpeg_size(data: bytes) -> tuple[int, int]:
    try:
        height, width, _, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError as exc:
        raise ValueError(f"not a readable JPEG: {exc}") from None
    return width, height


class _PayloadFile:
    def __init__(self, path: Path) -> None:
        self.file = open(path, "wb")  # closed in close()
        self.size = 0

    def append(self, data: bytes) -> int:
        offset = self.size
        self.file.write(data)
        self.size += len(data)
        return offset

    def close(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()


def _box_array(values: np.ndarray) -> pa.Array:
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1), pa.float64()), 4)


def _tables(
    order: list[str], jpegs: dict[str, _Jpeg], jsons: dict[str, _Json]
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


def _write_table(table: pa.Table, parquet: Path, arrow: Path) -> None:
    table = table.combine_chunks()
    pq.write_table(table, parquet, compression="zstd", row_group_size=PARQUET_ROW_GROUP)
    with pa.OSFile(str(arrow), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=max(table.num_rows, 1))
    for path in (parquet, arrow):
        with open(path, "rb+") as f:
            os.fsync(f.fileno())


def write_part(
    tar_path: str | os.PathLike,
    index: int,
    dst: str | os.PathLike,
    progress: Callable[[int], None] | None = None,
    image_longest: int | None = None,
) -> PartResult:
    """Pack shard ``index`` into ``dst/parts/sa_NNNNNN``; ShardError (nothing left) if bad.

    ``image_longest`` also stores each image resized to that longest side (SAM's shape),
    re-encoded at RESIZED_QUALITY, for training stores that never need the full size.
    """
    name = shard_name(index)
    parts = Path(dst) / PARTS_DIR
    parts.mkdir(parents=True, exist_ok=True)
    tmp = parts / f".tmp-{name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        result = _fill_part(Path(tar_path), name, tmp, progress, image_longest)
        final = parts / name
        if final.exists():  # an uncommitted leftover of a killed run: never listed, safe to drop
            shutil.rmtree(final)
        fsync_dir(tmp)
        os.rename(tmp, final)
        fsync_dir(parts)
        return result
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _fill_part(
    tar_path: Path,
    name: str,
    tmp: Path,
    progress: Callable[[int], None] | None,
    image_longest: int | None,
) -> PartResult:
    shard = tar_path.name
    jpeg_file = _PayloadFile(tmp / JPEG_PAYLOAD)
    counts_file = _PayloadFile(tmp / COUNTS_PAYLOAD)
    resized_file = _PayloadFile(tmp / RESIZED_PAYLOAD)
    jpegs: dict[str, _Jpeg] = {}
    jsons: dict[str, _Json] = {}
    skipped: list[tuple[str, str]] = []
    try:
        for member in iter_members(tar_path, shard):
            if member.kind is None:
                skipped.append((member.name, member.reason or "stray member"))
                continue
            seen = jpegs if member.kind == "jpg" else jsons
            if member.key in seen:
                raise ShardError(
                    shard, member.name, f"duplicate member (also {seen[member.key].member})"
                )
            assert member.data is not None
            try:
                if member.kind == "jpg":
                    width, height = _jpeg_size(member.data)
                    offset = jpeg_file.append(member.data)
                    jpeg = _Jpeg(member.name, offset, len(member.data), width, height)
                    if image_longest:
                        pixels = resize_longest(member.data, height, width, image_longest)
                        small = encode_jpeg(pixels)
                        where = resized_file.append(small)
                        jpeg.resized = (where, len(small), pixels.shape[1], pixels.shape[0])
                    jpegs[member.key] = jpeg
                else:
                    ann = parse_annotation_json(member.data)
                    if f"sa_{ann.image_id}" != member.key:
                        raise AnnotationError(
                            f"image.image_id {ann.image_id} does not match the member name"
                        )
                    offsets = np.array([counts_file.append(c) for c in ann.counts], np.uint64)
                    jsons[member.key] = _Json(member.name, ann, offsets)
                    if progress:
                        progress(1)
            except (ValueError, OverflowError) as exc:
                raise ShardError(shard, member.name, str(exc)) from None
    finally:
        jpeg_file.close()
        counts_file.close()
        resized_file.close()
    for key in sorted(jpegs.keys() - jsons.keys()):
        skipped.append((jpegs[key].member, "JPEG without its JSON"))
    for key in sorted(jsons.keys() - jpegs.keys()):
        skipped.append((jsons[key].member, "JSON without its JPEG"))
    order = sorted(jpegs.keys() & jsons.keys(), key=lambda k: jsons[k].ann.image_id)
    for key in order:
        jpeg, ann = jpegs[key], jsons[key].ann
        if (jpeg.width, jpeg.height) != (ann.width, ann.height):
            raise ShardError(
                shard,
                jsons[key].member,
                f"image size {ann.width}x{ann.height} (w x h) disagrees with the JPEG "
                f"header {jpeg.width}x{jpeg.height} of {jpeg.member}",
            )
    images, annotations = _tables(order, jpegs, jsons)
    _write_table(images, tmp / IMAGES_PARQUET, tmp / IMAGES_ARROW)
    _write_table(annotations, tmp / ANNOTATIONS_PARQUET, tmp / ANNOTATIONS_ARROW)
    entry = {
        "index": int(name[3:]),
        "source": {"file": shard, "bytes": tar_path.stat().st_size},
        "images": images.num_rows,
        "masks": annotations.num_rows,
        "jpeg_bytes": jpeg_file.size,
        "counts_bytes": counts_file.size,
        "resized_bytes": resized_file.size,
        "skipped_members": [list(s) for s in skipped],
        "files": {f: file_digest(tmp / f) for f in PART_FILES},
    }
    return PartResult(entry, skipped)

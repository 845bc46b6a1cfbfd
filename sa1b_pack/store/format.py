"""The store's contract, defined once: format version, file names, Arrow schemas, dtypes.

A store is a folder::

    manifest.json                     # FORMAT_VERSION, committed shards, counts, sizes, sha256
    parts/sa_000000/images.parquet    # one row per image (analysis: any Parquet tool)
    parts/sa_000000/annotations.parquet   # one row per mask, every source field
    parts/sa_000000/images.arrow      # the same tables as uncompressed Arrow IPC, memory-mapped
    parts/sa_000000/annotations.arrow #   by the reader: O(1) row access, shared page cache
    parts/sa_000000/jpeg.bin          # JPEG members' bytes as-is, addressed by images.jpeg_*
    parts/sa_000000/counts.bin        # masks' COCO counts strings as-is, by annotations.counts_*
    parts/sa_000000/resized.bin       # pre-resized JPEGs if packed with --image-longest

A shard exists for readers only once it is listed in manifest.json, which is replaced
atomically after its part folder is complete and renamed into place.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

FORMAT_VERSION = 2  # 2: masks kept as COCO strings (counts.bin), not uint32 runs
FORMAT_NAME = "sa1b_pack"

MANIFEST = "manifest.json"
PARTS_DIR = "parts"
LOCK_FILE = ".pack.lock"

IMAGES_PARQUET = "images.parquet"
ANNOTATIONS_PARQUET = "annotations.parquet"
IMAGES_ARROW = "images.arrow"
ANNOTATIONS_ARROW = "annotations.arrow"
JPEG_PAYLOAD = "jpeg.bin"
COUNTS_PAYLOAD = "counts.bin"
RESIZED_PAYLOAD = "resized.bin"
PART_FILES = (
    IMAGES_PARQUET,
    ANNOTATIONS_PARQUET,
    IMAGES_ARROW,
    ANNOTATIONS_ARROW,
    JPEG_PAYLOAD,
    COUNTS_PAYLOAD,
    RESIZED_PAYLOAD,
)

RUNS_DTYPE = np.dtype("<u4")  # decoded run lengths, in memory only
BYTES_DTYPE = np.dtype("u1")  # jpeg.bin and counts.bin

_box = pa.list_(pa.float64(), 4)
_point = pa.list_(pa.float64(), 2)

IMAGES_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.int64(), nullable=False),
        pa.field("file_name", pa.string(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("jpeg_offset", pa.uint64(), nullable=False),
        pa.field("jpeg_size", pa.uint64(), nullable=False),
        pa.field("mask_start", pa.uint64(), nullable=False),  # first row in annotations
        pa.field("mask_count", pa.uint32(), nullable=False),
        pa.field("resized_offset", pa.uint64(), nullable=False),  # 0/0/0/0 unless the store
        pa.field("resized_size", pa.uint64(), nullable=False),  # was packed with
        pa.field("resized_width", pa.int32(), nullable=False),  # --image-longest
        pa.field("resized_height", pa.int32(), nullable=False),
        pa.field("jpeg_member", pa.string(), nullable=False),  # tar member names, as found
        pa.field("json_member", pa.string(), nullable=False),
        pa.field("extra", pa.string()),  # JSON of unknown keys, kept so nothing is lost
    ],
    metadata={"format_version": str(FORMAT_VERSION)},
)

ANNOTATIONS_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.int64(), nullable=False),
        pa.field("id", pa.int64(), nullable=False),
        pa.field("bbox", _box, nullable=False),
        pa.field("area", pa.int64(), nullable=False),
        pa.field("predicted_iou", pa.float64(), nullable=False),
        pa.field("stability_score", pa.float64(), nullable=False),
        pa.field("point_coords", pa.list_(_point), nullable=False),
        pa.field("crop_box", _box, nullable=False),
        pa.field("seg_height", pa.int32(), nullable=False),  # segmentation.size = [h, w]
        pa.field("seg_width", pa.int32(), nullable=False),
        pa.field("counts_offset", pa.uint64(), nullable=False),  # bytes into counts.bin
        pa.field("counts_size", pa.uint32(), nullable=False),
        pa.field("extra", pa.string()),
    ],
    metadata={"format_version": str(FORMAT_VERSION)},
)

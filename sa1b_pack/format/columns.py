"""The one declarative list of a store's columns (the tables half of the contract): name,
Arrow type, where it comes from.

Everything that handles a field loops over these lists: the annotation parser (JSON ->
columns), the JSON rebuild (columns -> JSON), the part writer's tables, both part readers and
verify. A column with a ``source`` is copied from the annotation JSON (a dotted path inside
``image`` or inside one annotation; a number indexes a list); a column without one is layout
the packer writes (payload offsets, member names, JSON of unknown keys). Adding a field to
the store is one line here: a copied numeric mask column is also a ``Sample`` accessor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from .files import FORMAT_VERSION

BOX = pa.list_(pa.float64(), 4)
POINTS = pa.list_(pa.list_(pa.float64(), 2))


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType
    source: str | None = None  # JSON path inside the image object or one annotation
    nullable: bool = False
    attribute: str | None = None  # Sample's accessor of a copied mask column, if not ``name``

    @property
    def width(self) -> int | None:
        """Values per row of a fixed-size list column (a (rows, width) numpy view), else None."""
        return self.type.list_size if pa.types.is_fixed_size_list(self.type) else None

    @property
    def ragged(self) -> bool:
        """A list of fixed-size lists per row (prompt points): offsets + (n, 2) values."""
        return pa.types.is_list(self.type)

    @property
    def numpy_dtype(self) -> np.dtype:
        """The numpy dtype of one value (of each element, for a fixed-size list column)."""
        kind = self.type.value_type if self.width is not None else self.type
        return np.dtype(kind.to_pandas_dtype())

    @property
    def numeric(self) -> bool:
        """Held by readers as a numpy view (strings and ragged lists stay Arrow arrays)."""
        return not (pa.types.is_string(self.type) or self.ragged)


IMAGE_COLUMNS = (
    Column("image_id", pa.int64(), "image_id"),
    Column("file_name", pa.string(), "file_name"),
    Column("width", pa.int32(), "width"),
    Column("height", pa.int32(), "height"),
    Column("jpeg_offset", pa.uint64()),  # bytes into jpeg.bin
    Column("jpeg_size", pa.uint64()),
    Column("mask_start", pa.uint64()),  # first row in annotations
    Column("mask_count", pa.uint32()),
    Column("resized_offset", pa.uint64()),  # 0/0/0/0 unless the store was packed
    Column("resized_size", pa.uint64()),  # with --image-longest
    Column("resized_width", pa.int32()),
    Column("resized_height", pa.int32()),
    Column("jpeg_member", pa.string()),  # tar member names, as found
    Column("json_member", pa.string()),
    Column("extra", pa.string(), nullable=True),  # JSON of unknown keys: nothing is lost
)

MASK_COLUMNS = (
    Column("image_id", pa.int64()),  # the image's, repeated: a mask row stands alone
    Column("id", pa.int64(), "id", attribute="mask_ids"),  # as the training batch names it
    Column("bbox", BOX, "bbox"),
    Column("area", pa.int64(), "area"),
    Column("predicted_iou", pa.float64(), "predicted_iou"),
    Column("stability_score", pa.float64(), "stability_score"),
    Column("point_coords", POINTS, "point_coords"),
    Column("crop_box", BOX, "crop_box"),
    Column("seg_height", pa.int32(), "segmentation.size.0"),
    Column("seg_width", pa.int32(), "segmentation.size.1"),
    Column("counts_offset", pa.uint64()),  # bytes into counts.bin: the COCO string, as-is
    Column("counts_size", pa.uint32()),
    Column("extra", pa.string(), nullable=True),
)


TABLES = {"images": IMAGE_COLUMNS, "annotations": MASK_COLUMNS}


def schema(columns: tuple[Column, ...], format_version: int = FORMAT_VERSION) -> pa.Schema:
    fields = [pa.field(c.name, c.type, nullable=c.nullable) for c in columns]
    return pa.schema(fields, metadata={"format_version": str(format_version)})


SCHEMAS = {table: schema(columns) for table, columns in TABLES.items()}  # written and verified


def copied(columns: tuple[Column, ...]) -> tuple[Column, ...]:
    """The columns copied from the JSON, in list order."""
    return tuple(c for c in columns if c.source is not None)

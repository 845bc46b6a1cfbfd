"""One SA-1B annotation JSON -> typed columns, exactly as the source has it.

Parsing validates and copies every field named in ``format/columns.py``; nothing is "fixed", and the
COCO counts strings are kept as written (parsed here only to prove them well-formed). Unknown
keys are kept as JSON in ``extra``. ``document.build_document`` is the inverse.

Uncompressed RLE (``counts`` a list of run lengths, as SAM's mask generator writes without
--convert-to-rle) is stored as its COCO string, so every reader works unchanged, and marked in
the mask's ``extra`` as ``{"segmentation": {"counts": "uncompressed_rle"}}``: ``counts`` is a
known key, so no unknown source key can ever sit there, and the rebuild turns the string back
into the exact list (the string keeps every run, zero-length ones included). The store format
is unchanged. Cross-mask rejections and warnings are in checks.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import repeat
from operator import eq
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from ..codec.rle import RUNS_DTYPE, string_to_runs, uncompressed_to_string
from ..errors import AnnotationError
from ..format.columns import IMAGE_COLUMNS, MASK_COLUMNS, Column, copied
from . import checks
from .columnar import Irregular, MaskColumns, convert_masks

IMAGE_FIELDS = copied(IMAGE_COLUMNS)
MASK_FIELDS = copied(MASK_COLUMNS)
# The segmentation object is the mask itself: its size and counts are checked together below.
PLAIN_MASK_FIELDS = tuple(c for c in MASK_FIELDS if "." not in c.source)
IMAGE_KEYS = tuple(c.source for c in IMAGE_FIELDS)

ANNOTATION_KEYS = (*(c.source for c in PLAIN_MASK_FIELDS), "segmentation")
SEGMENTATION_KEYS = ("size", "counts")
ANNOTATION_KEYSET = frozenset(ANNOTATION_KEYS)
SEGMENTATION_KEYSET = frozenset(SEGMENTATION_KEYS)

UNCOMPRESSED = "uncompressed_rle"  # extra.segmentation.counts of a mask given as a run list
INT64_MAX = 2**63 - 1
INT32_MAX = 2**31 - 1


@dataclass
class ImageAnnotations:
    """One image's copied columns: image fields by name, per-mask arrays by name (source
    order), the ragged prompt points, the COCO strings (back to back, as in the source) and
    the JSON of unknown keys."""

    image: dict[str, Any]
    masks: dict[str, np.ndarray]
    point_counts: np.ndarray  # (N,) int64, points per mask
    points: np.ndarray  # (sum(point_counts), 2) float64
    counts_data: bytes  # every mask's COCO string, validated, back to back
    counts_sizes: np.ndarray  # (N,) int64, bytes of each string
    extra: str | None
    extras: list[str | None]
    converted: int = 0  # masks given as uncompressed RLE, stored as COCO strings
    warnings: list[str] = field(default_factory=list)  # packed as written, but doubtful

    def __len__(self) -> int:
        return len(self.counts_sizes)

    @property
    def counts(self) -> list[bytes]:
        """Each mask's COCO string, as in the source."""
        ends = np.cumsum(self.counts_sizes).tolist()
        return [self.counts_data[a:b] for a, b in zip([0, *ends], ends, strict=False)]

    @property
    def image_id(self) -> int:
        return self.image["image_id"]

    @property
    def width(self) -> int:
        return self.image["width"]

    @property
    def height(self) -> int:
        return self.image["height"]


def _int(value: Any, what: str, limit: int = INT64_MAX) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise AnnotationError(
            f"{what} must be an integer, got {type(value).__name__} {value!r:.40}"
        )
    if not -limit - 1 <= value <= limit:
        raise AnnotationError(f"{what} {value} does not fit in {limit.bit_length() + 1} bits")
    return value


def _number(value: Any, what: str) -> float:
    if value.__class__ not in (float, int):  # exact types: JSON gives no others; bool excluded
        raise AnnotationError(f"{what} must be a number, got {type(value).__name__} {value!r:.40}")
    return float(value)


def _numbers(value: Any, length: int, what: str) -> list[float]:
    if not isinstance(value, list) or len(value) != length:
        raise AnnotationError(f"{what} must be a list of {length} numbers, got {value!r:.60}")
    return [_number(v, what) for v in value]


def _string(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise AnnotationError(f"{what} must be a string")
    return value


def _points(value: Any, what: str) -> list[list[float]]:
    if not isinstance(value, list):
        raise AnnotationError(f"{what} must be a list of [x, y]")
    return [_numbers(p, 2, what) for p in value]


def _converter(column: Column) -> Callable[[Any, str], Any]:
    """The function that checks a JSON value against its column's type and converts it;
    chosen once per column, not per value."""
    kind = column.type
    if kind == pa.int64():
        return _int
    if kind == pa.int32():
        return lambda value, what: _int(value, what, INT32_MAX)
    if kind == pa.float64():
        return _number
    if kind == pa.string():
        return _string
    if (width := column.width) is not None:
        return lambda value, what: _numbers(value, width, what)
    if column.ragged:
        return _points
    raise TypeError(f"no JSON conversion for column {column.name} of type {kind}")


MASK_LIMITS = tuple(
    (c, INT32_MAX if c.type == pa.int32() else INT64_MAX) for c in PLAIN_MASK_FIELDS
)
IMAGE_CONVERT = tuple((c.name, c.source, _converter(c)) for c in IMAGE_FIELDS)
MASK_CONVERT = tuple((c.name, c.source, _converter(c), c.ragged) for c in PLAIN_MASK_FIELDS)


def _get(obj: dict, key: str, where: str) -> Any:
    if key not in obj:
        raise AnnotationError(f"missing key {where}{key}")
    return obj[key]


def _extra(obj: dict, known: tuple[str, ...]) -> dict:
    return {k: v for k, v in obj.items() if k not in known}


def _dump(extra: dict) -> str | None:
    return orjson.dumps(extra).decode() if extra else None


def _segmentation(ann: dict, height: int, width: int) -> tuple[int, int, str, np.ndarray]:
    seg = _get(ann, "segmentation", "")
    if not isinstance(seg, dict):
        raise AnnotationError("segmentation must be an object")
    size = _get(seg, "size", "segmentation.")
    if not isinstance(size, list) or len(size) != 2:
        raise AnnotationError(f"segmentation.size must be [h, w], got {size!r:.40}")
    h, w = (_int(v, "segmentation.size", INT32_MAX) for v in size)
    if (h, w) != (height, width):
        raise AnnotationError(
            f"segmentation.size {h}x{w} (h x w) does not match the image {height}x{width}"
        )
    counts = _get(seg, "counts", "segmentation.")
    if isinstance(counts, list):
        try:
            counts = uncompressed_to_string(counts, h, w)
        except ValueError as exc:
            raise AnnotationError(str(exc)) from None
    elif not isinstance(counts, str):
        raise AnnotationError("segmentation.counts must be a string or a list of runs")
    return h, w, counts, string_to_runs(counts, h, w)  # ValueError if malformed


def parse_annotation_json(raw: bytes) -> ImageAnnotations:
    """Parse and validate one ``sa_<N>.json``; AnnotationError names the bad field."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise AnnotationError(f"not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise AnnotationError("top level must be an object")
    image = _get(doc, "image", "")
    if not isinstance(image, dict):
        raise AnnotationError("image must be an object")
    anns = _get(doc, "annotations", "")
    if not isinstance(anns, list):
        raise AnnotationError("annotations must be a list")
    fields = {
        name: convert(_get(image, key, "image."), f"image.{key}")
        for name, key, convert in IMAGE_CONVERT
    }
    height, width = fields["height"], fields["width"]
    if width < 1 or height < 1:
        raise AnnotationError(f"image size {width}x{height} is not positive")
    extra = _extra(doc, ("image", "annotations"))
    if image_extra := _extra(image, IMAGE_KEYS):
        extra["image"] = image_extra

    try:
        columns = convert_masks(anns, MASK_LIMITS, height, width)
    except Irregular:
        columns = _masks_one_by_one(anns, height, width)
    if problem := checks.rejected(columns.masks):
        raise AnnotationError(problem)
    runs = (columns.runs, columns.run_offsets, columns.run_counts)
    return ImageAnnotations(
        image=fields,
        masks=columns.masks,
        point_counts=columns.point_counts,
        points=columns.points,
        counts_data=columns.counts_data,
        counts_sizes=columns.counts_sizes,
        extra=_dump(extra),
        extras=_mask_extras(anns, columns.segmentations, columns.converted),
        converted=len(columns.converted),
        warnings=checks.warnings(fields, columns.masks, *runs),
    )


def _mask_extras(
    anns: list[dict], segmentations: list[dict], converted: np.ndarray
) -> list[str | None]:
    """The JSON of each annotation's unknown keys (None when it has none, as released), plus
    the mark of counts given as uncompressed RLE."""
    if (
        not len(converted)
        and all(map(eq, map(dict.keys, anns), repeat(ANNOTATION_KEYSET)))
        and all(map(eq, map(dict.keys, segmentations), repeat(SEGMENTATION_KEYSET)))
    ):
        return [None] * len(anns)
    uncompressed = set(converted.tolist())
    extras = []
    for j, (ann, seg) in enumerate(zip(anns, segmentations, strict=True)):
        ann_extra = _extra(ann, ANNOTATION_KEYS)
        seg_extra = _extra(seg, SEGMENTATION_KEYS)
        if j in uncompressed:
            seg_extra["counts"] = UNCOMPRESSED
        if seg_extra:
            ann_extra["segmentation"] = seg_extra
        extras.append(_dump(ann_extra))
    return extras


def _masks_one_by_one(anns: list, height: int, width: int) -> MaskColumns:
    """The per-mask columns value by value: slow, but the first bad value is named exactly."""
    n = len(anns)
    masks = {
        c.name: np.empty((n, c.width) if c.width else n, c.numpy_dtype)
        for c in MASK_FIELDS
        if not c.ragged
    }
    point_counts = np.empty(n, np.int64)
    points: list[list[float]] = []
    strings: list[bytes] = []
    runs: list[np.ndarray] = []
    converted = []
    for j, ann in enumerate(anns):
        try:
            if not isinstance(ann, dict):
                raise AnnotationError("must be an object")
            for name, key, convert, ragged in MASK_CONVERT:
                value = convert(ann[key] if key in ann else _get(ann, key, ""), key)
                if ragged:
                    points.extend(value)
                    point_counts[j] = len(value)
                else:
                    masks[name][j] = value
            masks["seg_height"][j], masks["seg_width"][j], counts, mask_runs = _segmentation(
                ann, height, width
            )
            strings.append(counts.encode("ascii"))
            runs.append(mask_runs)
            if isinstance(ann["segmentation"]["counts"], list):
                converted.append(j)
        except (AnnotationError, ValueError) as exc:
            ann_id = ann.get("id", "?") if isinstance(ann, dict) else "?"
            raise AnnotationError(f"annotations[{j}] (id {ann_id}): {exc}") from None
    return MaskColumns(
        masks=masks,
        point_counts=point_counts,
        points=np.array(points, np.float64).reshape(-1, 2),
        counts_data=b"".join(strings),
        counts_sizes=np.array([len(c) for c in strings], np.int64),
        segmentations=[ann["segmentation"] for ann in anns],
        runs=np.concatenate([np.empty(0, RUNS_DTYPE), *runs]),
        run_offsets=np.cumsum([0, *map(len, runs)])[:-1].astype(np.int64),
        run_counts=np.array([len(r) for r in runs], np.int64),
        converted=np.array(converted, np.int64),
    )

"""One SA-1B annotation JSON -> validated, typed columns, exactly as the source has them.

Nothing is "fixed": every field is stored as written, the COCO counts strings included (they
are parsed here only to prove them well-formed). Unknown keys are kept as JSON in ``extra``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from ..codec.rle import string_to_runs

IMAGE_KEYS = ("image_id", "width", "height", "file_name")
ANNOTATION_KEYS = (
    "id",
    "segmentation",
    "area",
    "bbox",
    "predicted_iou",
    "stability_score",
    "point_coords",
    "crop_box",
)
SEGMENTATION_KEYS = ("size", "counts")


class AnnotationError(ValueError):
    """A malformed annotation file; the message says which field and why."""


@dataclass
class ImageAnnotations:
    """Columns of one image's annotations, in source order."""

    image_id: int
    file_name: str
    width: int
    height: int
    extra: str | None
    ids: np.ndarray  # (N,) int64
    bbox: np.ndarray  # (N, 4) float64
    area: np.ndarray  # (N,) int64
    predicted_iou: np.ndarray  # (N,) float64
    stability_score: np.ndarray  # (N,) float64
    point_counts: np.ndarray  # (N,) int64, points per mask
    points: np.ndarray  # (sum(point_counts), 2) float64
    crop_box: np.ndarray  # (N, 4) float64
    seg_size: np.ndarray  # (N, 2) int32, [h, w]
    counts: list[bytes]  # per mask, the COCO string as in the source (validated)
    extras: list[str | None]

    def __len__(self) -> int:
        return len(self.ids)


INT64_MAX = 2**63 - 1
INT32_MAX = 2**31 - 1


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


def _get(obj: dict, key: str, where: str) -> Any:
    if key not in obj:
        raise AnnotationError(f"missing key {where}{key}")
    return obj[key]


def _extra(obj: dict, known: tuple[str, ...]) -> dict:
    return {k: v for k, v in obj.items() if k not in known}


def _dump(extra: dict) -> str | None:
    return orjson.dumps(extra).decode() if extra else None


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
    image_id = _int(_get(image, "image_id", "image."), "image.image_id")
    width = _int(_get(image, "width", "image."), "image.width", INT32_MAX)
    height = _int(_get(image, "height", "image."), "image.height", INT32_MAX)
    if width < 1 or height < 1:
        raise AnnotationError(f"image size {width}x{height} is not positive")
    file_name = _get(image, "file_name", "image.")
    if not isinstance(file_name, str):
        raise AnnotationError("image.file_name must be a string")
    extra = _extra(doc, ("image", "annotations"))
    if image_extra := _extra(image, IMAGE_KEYS):
        extra["image"] = image_extra

    n = len(anns)
    ids = np.empty(n, np.int64)
    bbox = np.empty((n, 4), np.float64)
    area = np.empty(n, np.int64)
    iou = np.empty(n, np.float64)
    stability = np.empty(n, np.float64)
    crop = np.empty((n, 4), np.float64)
    seg_size = np.empty((n, 2), np.int32)
    point_counts = np.empty(n, np.int64)
    points: list[list[float]] = []
    strings: list[bytes] = []
    extras: list[str | None] = []
    for j, ann in enumerate(anns):
        where = f"annotations[{j}]."
        try:
            if not isinstance(ann, dict):
                raise AnnotationError("must be an object")
            ids[j] = _int(_get(ann, "id", ""), "id")
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
            seg_size[j] = (h, w)
            counts = _get(seg, "counts", "segmentation.")
            if not isinstance(counts, str):
                raise AnnotationError("segmentation.counts must be a string")
            string_to_runs(counts, h, w)  # ValueError if malformed
            strings.append(counts.encode("ascii"))
            area[j] = _int(_get(ann, "area", ""), "area")
            bbox[j] = _numbers(_get(ann, "bbox", ""), 4, "bbox")
            iou[j] = _number(_get(ann, "predicted_iou", ""), "predicted_iou")
            stability[j] = _number(_get(ann, "stability_score", ""), "stability_score")
            crop[j] = _numbers(_get(ann, "crop_box", ""), 4, "crop_box")
            pts = _get(ann, "point_coords", "")
            if not isinstance(pts, list):
                raise AnnotationError("point_coords must be a list of [x, y]")
            points.extend(_numbers(p, 2, "point_coords") for p in pts)
            point_counts[j] = len(pts)
            ann_extra = _extra(ann, ANNOTATION_KEYS)
            if seg_extra := _extra(seg, SEGMENTATION_KEYS):
                ann_extra["segmentation"] = seg_extra
            extras.append(_dump(ann_extra))
        except (AnnotationError, ValueError) as exc:
            ann_id = ann.get("id", "?") if isinstance(ann, dict) else "?"
            raise AnnotationError(f"{where.rstrip('.')} (id {ann_id}): {exc}") from None
    return ImageAnnotations(
        image_id=image_id,
        file_name=file_name,
        width=width,
        height=height,
        extra=_dump(extra),
        ids=ids,
        bbox=bbox,
        area=area,
        predicted_iou=iou,
        stability_score=stability,
        point_counts=point_counts,
        points=np.array(points, np.float64).reshape(-1, 2),
        crop_box=crop,
        seg_size=seg_size,
        counts=strings,
        extras=extras,
    )

"""Stored columns -> the ``sa_<N>.json`` document: the inverse of ``parse_annotation_json``.

The JSON rebuilt from the store compares equal to the source's (a bbox written as ints comes
back as floats); a mask marked as given in uncompressed RLE gets its list of runs back.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from ..codec.rle import string_to_runs
from ..format.columns import Column
from .annotation import IMAGE_FIELDS, MASK_FIELDS, UNCOMPRESSED


def _plain(value: Any, column: Column) -> Any:
    """A stored value as the JSON type its column came from."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, pa.Scalar):
        return value.as_py()
    if column.type == pa.float64():
        return float(value)
    if pa.types.is_integer(column.type):
        return int(value)
    return value


def _put(obj: dict, path: str, value: Any) -> None:
    """obj[a][b]... = value for a dotted path; a number indexes a list, created as needed."""
    keys = path.split(".")
    last = keys[-1]
    for key, child in itertools.pairwise(keys):
        obj = obj.setdefault(key, [] if child.isdigit() else {})
    if last.isdigit():
        obj.extend([None] * (int(last) + 1 - len(obj)))
        obj[int(last)] = value
    else:
        obj[last] = value


def _loads(value: str | None) -> dict[str, Any]:
    return orjson.loads(value) if value is not None else {}


def build_document(
    image: Mapping[str, Any],
    masks: Mapping[str, Sequence[Any]],
    strings: Sequence[str],
    image_extra: str | None,
    mask_extras: Sequence[str | None],
) -> dict[str, Any]:
    """The ``sa_<N>.json`` document from stored columns (by column name), the masks' COCO
    strings and the JSON of unknown keys: the inverse of ``parse_annotation_json``."""
    extra = _loads(image_extra)
    doc_image: dict[str, Any] = {}
    for c in IMAGE_FIELDS:
        _put(doc_image, c.source, _plain(image[c.name], c))
    doc_image.update(extra.pop("image", {}))
    annotations = []
    for j, counts in enumerate(strings):
        ann: dict[str, Any] = {}
        for c in MASK_FIELDS:
            _put(ann, c.source, _plain(masks[c.name][j], c))
        more = _loads(mask_extras[j])
        seg = ann["segmentation"]
        seg_more = more.pop("segmentation", {})
        if seg_more.pop("counts", None) == UNCOMPRESSED:  # the mark: counts is no unknown key
            seg["counts"] = string_to_runs(counts, *seg["size"]).tolist()
        else:
            seg["counts"] = counts
        seg.update(seg_more)
        ann.update(more)
        annotations.append(ann)
    return {"image": doc_image, "annotations": annotations, **extra}

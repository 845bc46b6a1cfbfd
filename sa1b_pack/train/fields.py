"""The fields of a training sample, declared once: the recipe fills them, transforms keep
them consistent, ``collate`` and the threaded loader's buffers pad and stack them.

Per-mask fields have the masks' K as their first axis (pairwise ones K on both axes) and are
padded to the batch's largest K with zeros (``point_labels`` with -1, SAM's "not a point");
per-image sizes are (h, w) pairs; ``points`` are (K, P, 2), P = ``Recipe.point_count``.
dtypes are the batch's (the numpy sample from ``training_sample`` may hold float64: cast on
the way out).
"""

from __future__ import annotations

from typing import Any

import numpy as np

PER_MASK: dict[str, tuple[Any, tuple[int, ...]]] = {  # field -> (dtype, trailing shape)
    "boxes": (np.float32, (4,)),
    "points": (np.float32, (1, 2)),  # (P, 2): P from the recipe, see per_mask
    "point_labels": (np.int64, (1,)),  # (P,): 1 foreground, 0 background, -1 no point
    "predicted_iou": (np.float32, ()),
    "stability_score": (np.float32, ()),
    "mask_ids": (np.int64, ()),
}
RELATIONS: dict[str, tuple[Any, tuple[int, ...]]] = {  # with Recipe(relations=True)
    "centroids": (np.float32, (2,)),
    "orig_centroids": (np.float32, (2,)),
    "scale_level": (np.int64, ()),
}
PAIRWISE: dict[str, Any] = {"iou": np.float32, "containment": np.float32}  # (K, K), relations
PAD = {"point_labels": -1}  # fields padded with another value than 0
SIZES = ("orig_size", "input_size", "mask_input_size")  # (h, w) each, int64 in a batch
BATCH_KEYS = ("image", "masks", "mask_valid", *PER_MASK, *RELATIONS, *PAIRWISE, "image_id",
              *SIZES)  # fmt: skip  # every key a batch may have besides attached arrays


def per_mask(relations: bool, points: int = 1) -> dict[str, tuple[Any, tuple[int, ...]]]:
    """The (K, ...) fields of a sample besides masks, relations' own when they are on, with
    ``points`` (P) prompt points per mask."""
    out = {**PER_MASK, "points": (np.float32, (points, 2)), "point_labels": (np.int64, (points,))}
    return {**out, **RELATIONS} if relations else out


def pairwise(relations: bool) -> dict[str, Any]:
    return dict(PAIRWISE) if relations else {}

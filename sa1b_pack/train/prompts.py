"""Prompts the way SAM trains, drawn from the sampled masks' runs: foreground points uniform over
each mask's pixels at full resolution, negative points outside it (inside its box, or
anywhere in the image), and noisy boxes. No mask is decoded for them.

Layout: ``points`` (K, P, 2) XY and ``point_labels`` (K, P), P = F + N: F foreground points
first (``points_per_mask``, or when it is 0 the one point stored in SA-1B, as before), then
N = ``negative_points``. Labels are SAM's: 1 foreground, 0 background, -1 no point (NaN
coordinates: an empty mask, a mask without a stored point, a box with no pixel outside its
mask, or a point a transform moved out of the image). A drawn point is the centre of the
drawn full-resolution pixel (x, y) in the resized frame, ((x + 0.5) * sx, (y + 0.5) * sy),
the frame of the boxes. Draws come from the sample's Generator (seed, epoch, image) in a
fixed order (foreground, negatives, box noise), so they are the same in any worker or thread.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..codec import points as pixels
from ..codec import rle

NEGATIVE_FROM = ("box", "image")


def pixel_boxes(bbox: np.ndarray, height: int, width: int) -> np.ndarray:
    """(K, 4) int64 [x0, y0, x1, y1) ranges of the pixels whose centres lie inside each XYWH
    box (edges included), clipped to the image."""
    lo = np.ceil(bbox[:, :2] - 0.5)
    hi = np.floor(bbox[:, :2] + bbox[:, 2:] - 0.5) + 1
    limit = np.array([width, height])
    lo = lo.clip(0, limit)
    hi = np.maximum(hi.clip(0, limit), lo)
    return np.concatenate([lo, hi], axis=1).astype(np.int64)


def _draw(have: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """(K, n) ranks uniform in [0, have[k]); -1 (no point) where a mask has none."""
    ranks = rng.integers(0, np.maximum(have, 1)[:, None], size=(len(have), n), dtype=np.int64)
    ranks[have <= 0] = -1
    return ranks


def _place(points: np.ndarray, labels: np.ndarray, pos: np.ndarray, height: int,
           scale: tuple[float, float], label: int) -> None:  # fmt: skip
    """Write the pixel centres of column-major offsets ``pos`` in the resized frame, and
    ``label``; NaN and -1 where there is no point (pos < 0)."""
    x, y = np.divmod(pos, height)
    points[..., 0] = (x + 0.5) * scale[0]
    points[..., 1] = (y + 0.5) * scale[1]
    none = pos < 0
    points[none] = np.nan
    labels[...] = np.where(none, -1, label)


def prompt_points(
    runs: np.ndarray,
    offsets: np.ndarray,
    counts: np.ndarray,
    height: int,
    width: int,
    bbox: np.ndarray,
    stored: np.ndarray,
    recipe: Any,  # a Recipe (recipe.py imports this module)
    rng: np.random.Generator,
    scale: tuple[float, float],
) -> tuple[np.ndarray, np.ndarray]:
    """(points (K, P, 2) float64, point_labels (K, P) int64) of K masks given by their runs,
    XYWH ``bbox`` and ``stored`` (K, 2) SA-1B points (full resolution, NaN if none), for a
    ``recipe`` with points_per_mask, negative_points and negative_from."""
    k, f = len(offsets), max(recipe.points_per_mask, 1)
    points = np.empty((k, recipe.point_count, 2))
    labels = np.empty((k, recipe.point_count), np.int64)
    if recipe.points_per_mask > 0:
        ranks = _draw(rle.area(runs, offsets, counts), f, rng)
        pos = pixels.pixels_at_ranks(runs, offsets, counts, height, width, ranks)
        _place(points[:, :f], labels[:, :f], pos, height, scale, 1)
    else:
        points[:, 0] = np.asarray(stored, np.float64).reshape(k, 2) * scale
        labels[:, 0] = np.where(np.isfinite(points[:, 0]).all(axis=-1), 1, -1)
    n = recipe.negative_points
    if n > 0 and recipe.negative_from == "box":
        boxes = pixel_boxes(np.asarray(bbox, np.float64), height, width)
        free = pixels.box_background_counts(runs, offsets, counts, height, width, boxes)
        pos = pixels.box_background_at_ranks(runs, offsets, counts, height, width, boxes,
                                             _draw(free, n, rng))  # fmt: skip
        _place(points[:, f:], labels[:, f:], pos, height, scale, 0)
    elif n > 0:
        free = np.int64(height) * np.int64(width) - rle.area(runs, offsets, counts)
        pos = pixels.pixels_at_ranks(runs, offsets, counts, height, width, _draw(free, n, rng),
                                     foreground=False)  # fmt: skip
        _place(points[:, f:], labels[:, f:], pos, height, scale, 0)
    return points, labels


def noisy_boxes(
    boxes: np.ndarray, fraction: float, cap: float, rng: np.random.Generator, size: tuple
) -> np.ndarray:
    """SAM's box noise: each XYXY coordinate moved by a normal draw with standard deviation
    ``fraction`` x the box's side along that axis, clipped to +-``cap`` pixels (of this, the
    resized, frame: SAM's 20 px are at 1024), then kept ordered and inside the valid (h, w)."""
    side = boxes[:, 2:] - boxes[:, :2]
    std = fraction * np.concatenate([side, side], axis=1)
    noise = np.minimum(np.maximum(rng.standard_normal(boxes.shape) * std, -cap), cap)
    moved = boxes + noise
    limit = np.array([size[1], size[0]], np.float64)  # (w, h)
    lo = np.minimum(np.maximum(np.minimum(moved[:, :2], moved[:, 2:]), 0), limit)
    hi = np.minimum(np.maximum(np.maximum(moved[:, :2], moved[:, 2:]), 0), limit)
    return np.concatenate([lo, hi], axis=1)

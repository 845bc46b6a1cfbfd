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

from typing import TYPE_CHECKING

import numpy as np

from ..codec import points as pixels
from ..codec import rle

if TYPE_CHECKING:
    from .recipe import Recipe

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


def _centres(pos: np.ndarray, height: int, scale: tuple[float, float]) -> np.ndarray:
    """(K, P, 2) pixel centres in the resized frame of column-major offsets; NaN where < 0."""
    xy = np.stack([pos // height, pos % height], axis=-1) + 0.5
    xy *= np.asarray(scale, np.float64)
    xy[pos < 0] = np.nan
    return xy


def prompt_points(
    runs: np.ndarray,
    offsets: np.ndarray,
    counts: np.ndarray,
    height: int,
    width: int,
    bbox: np.ndarray,
    stored: np.ndarray,
    recipe: Recipe,
    rng: np.random.Generator,
    scale: tuple[float, float],
) -> tuple[np.ndarray, np.ndarray]:
    """(points (K, P, 2) float64, point_labels (K, P) int64) of K masks given by their runs,
    XYWH ``bbox`` and ``stored`` (K, 2) SA-1B points (full resolution, NaN if none), for a
    ``recipe`` with points_per_mask, negative_points and negative_from."""
    k = len(offsets)
    parts, labels = [], []
    area = rle.area(runs, offsets, counts)
    if recipe.points_per_mask > 0:
        ranks = _draw(area, recipe.points_per_mask, rng)
        pos = pixels.pixels_at_ranks(runs, offsets, counts, height, width, ranks)
        parts.append(_centres(pos, height, scale))
        labels.append(np.where(pos >= 0, 1, -1))
    else:
        points = np.asarray(stored, np.float64).reshape(k, 1, 2) * np.asarray(scale)
        parts.append(points)
        labels.append(np.where(np.isfinite(points).all(axis=-1), 1, -1))
    if recipe.negative_points > 0:
        if recipe.negative_from == "box":
            boxes = pixel_boxes(np.asarray(bbox, np.float64), height, width)
            free = pixels.box_background_counts(runs, offsets, counts, height, width, boxes)
            ranks = _draw(free, recipe.negative_points, rng)
            pos = pixels.box_background_at_ranks(runs, offsets, counts, height, width, boxes,
                                                 ranks)  # fmt: skip
        else:
            free = np.int64(height) * np.int64(width) - area
            ranks = _draw(free, recipe.negative_points, rng)
            pos = pixels.pixels_at_ranks(runs, offsets, counts, height, width, ranks,
                                         foreground=False)  # fmt: skip
        parts.append(_centres(pos, height, scale))
        labels.append(np.where(pos >= 0, 0, -1))
    return np.concatenate(parts, axis=1), np.concatenate(labels, axis=1).astype(np.int64)


def noisy_boxes(
    boxes: np.ndarray, fraction: float, cap: float, rng: np.random.Generator, size: tuple
) -> np.ndarray:
    """SAM's box noise: each XYXY coordinate moved by a normal draw with standard deviation
    ``fraction`` x the box's side along that axis, clipped to +-``cap`` pixels (of this, the
    resized, frame: SAM's 20 px are at 1024), then kept ordered and inside the valid (h, w)."""
    side = np.tile(boxes[:, 2:] - boxes[:, :2], 2)
    noise = (rng.standard_normal(boxes.shape) * (fraction * side)).clip(-cap, cap)
    moved = boxes + noise
    h, w = size
    xs = np.sort(moved[:, 0::2], axis=1).clip(0, w)
    ys = np.sort(moved[:, 1::2], axis=1).clip(0, h)
    return np.stack([xs[:, 0], ys[:, 0], xs[:, 1], ys[:, 1]], axis=1)

"""How the sampled masks of an image relate: overlap, nesting, position and scale, computed
from their runs at full resolution (no full-size mask is decoded).

Scale levels are COCO's small / medium / large thresholds (32² and 96² pixels on COCO's
~640 x 480 images) taken as fractions of the image's area, so that they mean the same on
SA-1B's ~1500 x 2250 images (x11 the pixels) and on any store whatever its image sizes. Fixed
thresholds, not quantiles: a level says the same thing on every image and in every epoch,
needs no pass over the dataset, and matches the COCO evaluation the levels come from.
"""

from __future__ import annotations

import numpy as np

from ..codec import rle

COCO_AREA = 640 * 480
SCALE_FRACTIONS = np.array([32**2 / COCO_AREA, 96**2 / COCO_AREA])  # small | medium | large
SMALL, MEDIUM, LARGE = 0, 1, 2


def scale_levels(area: np.ndarray, height: int, width: int) -> np.ndarray:
    """0 (small), 1 (medium) or 2 (large) per mask, by area over the image's area."""
    bounds = SCALE_FRACTIONS * (int(height) * int(width))
    return np.searchsorted(bounds, np.asarray(area, np.float64), side="right").astype(np.int64)


def mask_relations(
    runs: np.ndarray,
    offsets: np.ndarray,
    counts: np.ndarray,
    height: int,
    width: int,
    scale: tuple[float, float],
) -> dict[str, np.ndarray]:
    """Relations of K masks given by their runs (``Sample.mask_runs``), for a sample.

    ``iou`` (K, K) as pycocotools.mask.iou(iscrowd=0); ``containment`` (K, K) with
    [i, j] = |i ∩ j| / |i|, the share of mask i inside mask j (row i sums how i is covered;
    0 for an empty i); ``orig_centroids`` (K, 2) XY centre of mass at full resolution and
    ``centroids`` the same scaled by ``scale`` (sx, sy) to the sample's frame, both with
    pixel centres at index + 0.5 like boxes and points (NaN for an empty mask);
    ``scale_level`` (K,) from the full-resolution areas.
    """
    inter = rle.intersections(runs, offsets, counts)
    orig = rle.centroids(runs, offsets, counts, height)
    return {
        "iou": rle.iou(inter),
        "containment": rle.containment(inter),
        "centroids": orig * np.asarray(scale, np.float64),
        "orig_centroids": orig,
        "scale_level": scale_levels(np.diag(inter), height, width),
    }

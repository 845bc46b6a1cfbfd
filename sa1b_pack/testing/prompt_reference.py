"""The slow, obvious reference of codec/points.py: decode each mask with pycocotools, list the
wanted pixels column-major with np.nonzero, and index them by rank. Tests hold the kernels
equal to it for the same ranks; never used on a hot path.
"""

from __future__ import annotations

import numpy as np
import pycocotools.mask as coco


def dense_masks(runs_list: list[np.ndarray], height: int, width: int) -> list[np.ndarray]:
    """(H, W) uint8 masks from run lengths, decoded by pycocotools (uncompressed RLE)."""
    out = []
    for runs in runs_list:
        rle = coco.frPyObjects({"size": [height, width], "counts": [int(r) for r in runs]},
                               height, width)  # fmt: skip
        out.append(coco.decode(rle))
    return out


def _at(candidates: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """The column-major offsets of the True pixels of (H, W) ``candidates``, at ``ranks``."""
    offsets = np.flatnonzero(candidates.T.ravel())
    return np.array([offsets[q] if q >= 0 else -1 for q in ranks], np.int64)


def pixels_at_ranks(masks: list[np.ndarray], ranks: np.ndarray, foreground: bool) -> np.ndarray:
    """(K, P): the ranks[m, p]-th foreground (or background) pixel of each mask, or -1."""
    rows = [_at(m.astype(bool) == foreground, r) for m, r in zip(masks, ranks, strict=True)]
    return np.array(rows, np.int64).reshape(ranks.shape)


def _outside_in_box(mask: np.ndarray, box: np.ndarray) -> np.ndarray:
    x0, y0, x1, y1 = (int(v) for v in box)
    region = np.zeros(mask.shape, bool)
    region[y0:y1, x0:x1] = True
    return region & ~mask.astype(bool)


def box_background_counts(masks: list[np.ndarray], boxes: np.ndarray) -> np.ndarray:
    """(K,): pixels of box m ([x0, y0, x1, y1) pixel ranges) not in mask m."""
    return np.array([_outside_in_box(m, b).sum() for m, b in zip(masks, boxes, strict=True)],
                    np.int64)  # fmt: skip


def box_background_at_ranks(
    masks: list[np.ndarray], boxes: np.ndarray, ranks: np.ndarray
) -> np.ndarray:
    """(K, P): the ranks[m, p]-th pixel (column-major) of box m not in mask m, or -1."""
    rows = [_at(_outside_in_box(m, b), r) for m, b, r in zip(masks, boxes, ranks, strict=True)]
    return np.array(rows, np.int64).reshape(ranks.shape)

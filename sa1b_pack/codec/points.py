"""Pixels of masks chosen by rank, from the runs: the API of kernels/prompts.py.

What prompt sampling needs: with ranks drawn uniformly in [0, count), the q-th foreground
pixel is a uniform foreground pixel, and the same for the background, or the pixels of a box
outside the mask. Results are column-major offsets (x * height + y), -1 where the rank was
negative (no point wanted); ValueError for bad runs, boxes or ranks.
"""

from __future__ import annotations

import numpy as np

from . import kernels


def _arrays(offsets: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.ascontiguousarray(offsets, np.int64), np.ascontiguousarray(counts, np.int64)


def _out(out: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    if out is None:
        return np.empty(shape, np.int64)
    if out.shape != shape or out.dtype != np.int64 or not out.flags.writeable:
        raise ValueError(f"out must be a writeable int64 array of shape {shape}")
    return out


def _raise(status: int, what: str) -> None:
    if status == kernels.ERR_SHAPE:
        raise ValueError(f"shapes disagree, or a box outside the image ({what})")
    if status >= 0:
        raise ValueError(f"mask {status}: runs outside the payload or not summing to the "
                         f"image's pixels, or a rank beyond its {what}")  # fmt: skip


def pixels_at_ranks(
    runs: np.ndarray,
    offsets: np.ndarray,
    counts: np.ndarray,
    height: int,
    width: int,
    ranks: np.ndarray,
    *,
    foreground: bool = True,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """(K, P) offsets of the ranks[m, p]-th foreground (or background) pixel of mask m."""
    offsets, counts = _arrays(offsets, counts)
    ranks = np.ascontiguousarray(ranks, np.int64)
    result = _out(out, ranks.shape)
    total = np.int64(height) * np.int64(width)
    status = kernels.pixels_at_ranks(runs, offsets, counts, total, int(foreground), ranks, result)
    _raise(status, "foreground pixels" if foreground else "background pixels")
    return result


def box_background_counts(
    runs: np.ndarray,
    offsets: np.ndarray,
    counts: np.ndarray,
    height: int,
    width: int,
    boxes: np.ndarray,
    *,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """(K,) pixels of box m (int [x0, y0, x1, y1) ranges inside the image) not in mask m."""
    offsets, counts = _arrays(offsets, counts)
    boxes = np.ascontiguousarray(boxes, np.int64)
    result = _out(out, (len(offsets),))
    status = kernels.box_background_counts(runs, offsets, counts, height, width, boxes, result)
    _raise(status, "box pixels")
    return result


def box_background_at_ranks(
    runs: np.ndarray,
    offsets: np.ndarray,
    counts: np.ndarray,
    height: int,
    width: int,
    boxes: np.ndarray,
    ranks: np.ndarray,
    *,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """(K, P) offsets of the ranks[m, p]-th pixel (column-major) of box m not in mask m."""
    offsets, counts = _arrays(offsets, counts)
    boxes = np.ascontiguousarray(boxes, np.int64)
    ranks = np.ascontiguousarray(ranks, np.int64)
    result = _out(out, ranks.shape)
    status = kernels.box_background_at_ranks(runs, offsets, counts, height, width, boxes, ranks,
                                             result)  # fmt: skip
    _raise(status, "box pixels outside the mask")
    return result

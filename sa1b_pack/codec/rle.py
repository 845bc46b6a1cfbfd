"""Mask codec API: the numba kernels behind argument checks, allocation and clear errors."""

from __future__ import annotations

import numpy as np

from ..errors import AnnotationError, ConfigError
from . import kernels
from .geometry import resize_longest_shape

RUNS_DTYPE = np.dtype("<u4")  # decoded run lengths, in memory only

_PARSE_ERRORS = {
    kernels.ERR_BAD_CHAR: "a character outside '0'..'o'",
    kernels.ERR_TRUNCATED: "the string ends inside a continuation",
    kernels.ERR_NEGATIVE: "a negative run",
    kernels.ERR_OVERFLOW: "a run that overflows 32 bits",
    kernels.ERR_SUM: "runs that do not sum to height * width",
}


def _as_bytes(counts: str | bytes) -> np.ndarray:
    if isinstance(counts, str):
        try:
            counts = counts.encode("ascii")
        except UnicodeEncodeError:
            raise AnnotationError("malformed RLE counts: a non-ASCII character") from None
    return np.frombuffer(counts, dtype=np.uint8)


def string_to_runs(counts: str | bytes, height: int, width: int) -> np.ndarray:
    """Runs (uint32) of a COCO counts string; AnnotationError if malformed or off h * w."""
    data = _as_bytes(counts)
    if len(data) == 0:
        raise AnnotationError("malformed RLE counts: an empty string")
    out = np.empty(max(len(data), 1), dtype=RUNS_DTYPE)
    n = kernels.parse_counts(data, out, np.int64(height) * np.int64(width))
    if n < 0:
        raise AnnotationError(f"malformed RLE counts: {_PARSE_ERRORS.get(n, f'error {n}')}")
    return out[:n]


def parse_strings(
    data: np.ndarray, offsets: np.ndarray, sizes: np.ndarray, height: int, width: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs of many COCO strings stored back to back in ``data`` (uint8), in one kernel call.

    Returns (runs, run_offsets, run_counts) for ``decode``; AnnotationError naming the first bad
    string, before anything is decoded.
    """
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    sizes = np.ascontiguousarray(sizes, dtype=np.int64)
    runs = np.empty(max(int(sizes.sum()), 1), dtype=RUNS_DTYPE)
    run_offsets = np.zeros(len(offsets), np.int64)
    run_counts = np.zeros(len(offsets), np.int64)
    total = np.int64(height) * np.int64(width)
    bad = kernels.parse_counts_batch(data, offsets, sizes, total, runs, run_offsets, run_counts)
    if bad >= 0:
        status = int(run_counts[bad])
        why = _PARSE_ERRORS.get(status, "a string outside the payload")
        raise AnnotationError(f"malformed RLE counts for mask {bad}: {why}")
    return runs, run_offsets, run_counts


def encode_strings(
    runs: np.ndarray, offsets: np.ndarray, counts: np.ndarray, height: int, width: int
) -> tuple[bytes, np.ndarray]:
    """COCO strings of many masks' runs, runs[offsets[m] : offsets[m] + counts[m]] (any
    integer dtype, e.g. uncompressed RLE counts), back to back, and each string's byte size;
    bit-exact with pycocotools.mask.frPyObjects. AnnotationError naming the first mask whose runs
    are negative, overflow 32 bits or do not sum to height * width."""
    runs = np.ascontiguousarray(runs, dtype=np.int64)
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    counts = np.ascontiguousarray(counts, dtype=np.int64)
    out = np.empty(max(7 * len(runs), 1), dtype=np.uint8)
    sizes = np.zeros(len(offsets), np.int64)
    total = np.int64(height) * np.int64(width)
    bad = kernels.encode_counts_batch(runs, offsets, counts, total, out, sizes)
    if bad >= 0:
        why = _PARSE_ERRORS.get(int(sizes[bad]), "runs outside the array")
        raise AnnotationError(f"uncompressed RLE counts of mask {bad}: {why}")
    return out[: int(sizes.sum())].tobytes(), sizes


def uncompressed_to_string(counts: list[int], height: int, width: int) -> str:
    """One uncompressed RLE's run lengths (what SAM's mask generator writes without
    --convert-to-rle) -> its COCO string, as pycocotools.mask.frPyObjects({"size": [h, w],
    "counts": counts}, h, w)["counts"]; AnnotationError for runs that are not integers, are
    negative or do not sum to height * width (pycocotools checks none of these)."""
    if not isinstance(counts, list) or not set(map(type, counts)) <= {int}:
        bad = next((c for c in counts if type(c) is not int), counts)
        raise AnnotationError(
            f"uncompressed RLE counts: runs must be integers, got {type(bad).__name__} {bad!r:.40}"
        )
    try:
        runs = np.array(counts, np.int64)
    except OverflowError:
        raise AnnotationError("uncompressed RLE counts: a run that overflows 32 bits") from None
    offsets, sizes = np.zeros(1, np.int64), np.array([len(runs)], np.int64)
    try:
        data, _ = encode_strings(runs, offsets, sizes, height, width)
    except ValueError as exc:
        raise AnnotationError(str(exc).replace(" of mask 0", "")) from None
    return data.decode("ascii")


def _check_out(out: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    if out is None:
        return np.empty(shape, dtype=np.uint8)
    if out.shape != shape:
        raise ConfigError(f"out has shape {out.shape}, expected {shape}")
    if out.dtype not in (np.uint8, np.bool_):
        raise ConfigError(f"out must be uint8 or bool, got {out.dtype}")
    if not out.flags.writeable or (out.size and out.strides[-1] != out.itemsize):
        raise ConfigError("out must be writeable, with a contiguous last axis")
    return out


def decode(
    runs: np.ndarray,
    offsets: np.ndarray,
    counts: np.ndarray,
    height: int,
    width: int,
    *,
    size: tuple[int, int] | None = None,
    out: np.ndarray | None = None,
    parallel: bool = False,
) -> np.ndarray:
    """Decode masks runs[offsets[m] : offsets[m] + counts[m]] into (N, h, w).

    ``size=(h, w)`` resamples by nearest neighbour: output pixel (y, x) is source pixel
    (floor((y + 0.5) * H / h), floor((x + 0.5) * W / w)), computed from the runs at a cost in
    output pixels plus runs. ``out`` may be any (N, h, w) uint8/bool view with a contiguous last
    axis (e.g. the top-left corner of a padded buffer). Nothing is written unless every mask
    is valid. ``parallel`` spreads masks over numba threads.
    """
    h, w = (height, width) if size is None else (int(size[0]), int(size[1]))
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    counts = np.ascontiguousarray(counts, dtype=np.int64)
    result = _check_out(out, (len(offsets), h, w))
    if height < 1 or width < 1 or h < 1 or w < 1:
        raise ConfigError(f"empty mask size: source {height}x{width}, output {h}x{w}")
    row_map = kernels.sample_map(height, h)
    col_map = kernels.sample_map(width, w)
    target = result.view(np.uint8) if result.dtype == np.bool_ else result
    kernel = kernels.decode_masks_parallel if parallel else kernels.decode_masks
    bad = kernel(runs, offsets, counts, height, width, row_map, col_map, target)
    if bad >= 0:
        raise AnnotationError(
            f"corrupt runs for mask {bad}: outside the payload or not summing to {height} x {width}"
        )
    if bad != -1:
        raise ConfigError(f"cannot decode into out of shape {result.shape}")
    return result


def decode_padded(
    runs: np.ndarray,
    offsets: np.ndarray,
    counts: np.ndarray,
    height: int,
    width: int,
    *,
    longest: int,
    pad: bool,
    out: np.ndarray | None = None,
    parallel: bool = False,
) -> np.ndarray:
    """SAM's ResizeLongestSide(longest), then (if ``pad``) zero pad bottom/right to a square."""
    h, w = resize_longest_shape(height, width, longest)
    shape = (len(offsets), longest, longest) if pad else (len(offsets), h, w)
    result = _check_out(out, shape)
    decode(runs, offsets, counts, height, width, size=(h, w), out=result[:, :h, :w],
           parallel=parallel)  # fmt: skip
    if pad:
        result[:, h:, :] = 0
        result[:, :h, w:] = 0
    return result


def intersections(runs: np.ndarray, offsets: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(N, N) int64 |A ∩ B| from the runs alone; the diagonal holds each mask's area."""
    starts, ends, bounds = kernels.foreground_intervals(
        runs, np.asarray(offsets, np.int64), np.asarray(counts, np.int64)
    )
    out = np.empty((len(offsets), len(offsets)), np.int64)
    kernels.pairwise_intersections(starts, ends, bounds, out)
    return out


def iou(inter: np.ndarray) -> np.ndarray:
    """IoU matrix from ``intersections``, as pycocotools.mask.iou(iscrowd=0): 0 where disjoint."""
    area = np.diag(inter)
    union = area[:, None] + area[None, :] - inter
    return np.divide(inter, union, out=np.zeros(inter.shape), where=inter > 0)


def containment(inter: np.ndarray) -> np.ndarray:
    """C[i, j] = |i ∩ j| / |i|: the fraction of mask i inside mask j (row i: how i is covered;
    0 where i is empty). The one orientation of the word across the library."""
    area = np.diag(inter)
    return np.divide(inter, area[:, None], out=np.zeros(inter.shape), where=inter > 0)


def area(runs: np.ndarray, offsets: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Foreground pixel count per mask (int64), derived from the runs."""
    out = np.empty(len(offsets), dtype=np.int64)
    kernels.runs_area(runs, np.asarray(offsets, np.int64), np.asarray(counts, np.int64), out)
    return out


def bbox(runs: np.ndarray, offsets: np.ndarray, counts: np.ndarray, height: int) -> np.ndarray:
    """Tight [x, y, w, h] box per mask (float64) derived from the runs, as pycocotools.toBbox."""
    out = np.empty((len(offsets), 4), dtype=np.float64)
    kernels.runs_bbox(
        runs, np.asarray(offsets, np.int64), np.asarray(counts, np.int64), height, out
    )
    return out


def centroids(runs: np.ndarray, offsets: np.ndarray, counts: np.ndarray, height: int) -> np.ndarray:
    """(N, 2) float64 XY centre of mass per mask from the runs, in continuous pixel
    coordinates (pixel (y, x) covers [x, x + 1) x [y, y + 1), the frame of the boxes and
    points): the mean pixel index + 0.5. NaN for an empty mask."""
    moments = np.empty((len(offsets), 3), dtype=np.int64)
    kernels.runs_moments(
        runs, np.asarray(offsets, np.int64), np.asarray(counts, np.int64), height, moments
    )
    out = np.full((len(offsets), 2), np.nan)
    area = moments[:, 0:1]
    np.divide(moments[:, 1:], area, out=out, where=area > 0)
    out += 0.5
    return out

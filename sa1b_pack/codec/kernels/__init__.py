"""Every numba kernel of the package, in this folder: plain functions over preallocated arrays.

Kernels never raise: they return a negative status (``ERR_*``) that ``rle.py`` turns into a
ValueError with context. Every index is checked before a write, so a malformed input can never
write out of bounds (numba does not bounds-check). Set ``NUMBA_DISABLE_JIT=1`` to run all of
them as plain Python for debugging; ``sa1b_pack.testing.rle_reference`` holds the slow reference
they are tested against.

Dense masks are decoded by *row propagation*: COCO runs walk the image column by column, but
the output is row-major, so writing runs directly would stride by W. Instead row 0 is filled
from the runs, and every later row is a copy of the row above with a few pixels flipped, one
flip per run boundary that falls in that row. The output is written once, sequentially, from
cache: the cost is that of a memset plus one flip per run. Nearest-neighbour resampling is the
same walk with the source rows/columns mapped to output rows/columns.
"""

from __future__ import annotations

from .common import (
    ERR_BAD_CHAR,
    ERR_NEGATIVE,
    ERR_OUT_TOO_SMALL,
    ERR_OVERFLOW,
    ERR_SHAPE,
    ERR_SUM,
    ERR_TRUNCATED,
    OK,
)
from .decode import check_runs, decode_masks, decode_masks_parallel, runs_sum, sample_map
from .prompts import box_background_at_ranks, box_background_counts, pixels_at_ranks
from .runs import (
    foreground_intervals,
    pairwise_intersections,
    runs_area,
    runs_bbox,
    runs_moments,
)
from .strings import encode_counts, encode_counts_batch, parse_counts, parse_counts_batch

__all__ = [
    "ERR_BAD_CHAR",
    "ERR_NEGATIVE",
    "ERR_OUT_TOO_SMALL",
    "ERR_OVERFLOW",
    "ERR_SHAPE",
    "ERR_SUM",
    "ERR_TRUNCATED",
    "OK",
    "box_background_at_ranks",
    "box_background_counts",
    "check_runs",
    "decode_masks",
    "decode_masks_parallel",
    "encode_counts",
    "encode_counts_batch",
    "foreground_intervals",
    "pairwise_intersections",
    "parse_counts",
    "parse_counts_batch",
    "pixels_at_ranks",
    "runs_area",
    "runs_bbox",
    "runs_moments",
    "runs_sum",
    "sample_map",
]

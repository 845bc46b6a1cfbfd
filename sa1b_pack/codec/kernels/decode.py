"""Runs -> dense masks by row propagation, at full size or nearest-neighbour resampled."""

from __future__ import annotations

import numba as nb
import numpy as np

from .common import ERR_SHAPE, jit, jit_parallel


@jit
def runs_sum(runs, start, count):
    total = np.int64(0)
    for i in range(start, start + count):
        total += np.int64(runs[i])
    return total


@jit
def check_runs(runs, offsets, counts, total):
    """First mask whose runs leave the payload or do not sum to ``total``; -1 if none."""
    for m in range(offsets.shape[0]):
        start = offsets[m]
        count = counts[m]
        if start < 0 or count < 1 or start + count > runs.shape[0]:
            return m
        if runs_sum(runs, start, count) != total:
            return m
    return -1


@jit
def sample_map(src, dst):
    """Nearest-neighbour source index of each of ``dst`` outputs: floor((o + 0.5) * src / dst)."""
    out = np.empty(dst, np.int64)
    for o in range(dst):
        out[o] = ((2 * o + 1) * src) // (2 * dst)
    return out


@jit
def _first_output_row(row_map, height):
    """For each source row y, the first output row sampling a row >= y (len(row_map) if none)."""
    h = row_map.shape[0]
    first = np.empty(height, np.int64)
    o = 0
    for y in range(height):
        while o < h and row_map[o] < y:
            o += 1
        first[y] = o
    return first


@jit
def _output_columns(col_map, width):
    """For each source column, the first output column sampling it and how many do."""
    first = np.zeros(width, np.int64)
    count = np.zeros(width, np.int64)
    for o in range(col_map.shape[0]):
        x = col_map[o]
        if count[x] == 0:
            first[x] = o
        count[x] += 1
    return first, count


@jit
def _decode_one(runs, start, nruns, height, col_map, row0, first_row, col_first, col_count, out):
    """Row-propagation decode of one mask (runs already validated) into out (h, w)."""
    h = out.shape[0]
    w = out.shape[1]
    # Row 0: the value of the run covering source pixel (row0, col_map[o]) of each output column.
    # The current row lives in a small buffer (L1) and is copied out: no aliasing, no re-reads.
    row = np.empty(w, np.uint8)
    i = start
    end = np.int64(runs[i])
    last = start + nruns - 1
    for o in range(w):
        p = col_map[o] * height + row0
        while end <= p and i < last:
            i += 1
            end += runs[i]
        row[o] = (i - start) & 1
    # Flips: one per run boundary (start of run j >= 1) that lands below output row 0, for each
    # output column sampling its source column; then bucketed by output row (counting sort).
    flip_rows = np.empty(nruns, np.int64)
    flip_cols = np.empty(nruns, np.int64)
    nflips = 0
    row_counts = np.zeros(h + 1, np.int64)
    x = np.int64(0)
    y = np.int64(0)
    for j in range(start + 1, start + nruns):
        y += runs[j - 1]
        if y >= height:
            x += y // height
            y = y % height
        if x >= col_count.shape[0] or y == 0 or col_count[x] == 0:
            continue
        oy = first_row[y]
        if oy == 0 or oy >= h:
            continue
        flip_rows[nflips] = oy
        flip_cols[nflips] = x
        nflips += 1
        row_counts[oy + 1] += col_count[x]
    for r in range(h):
        row_counts[r + 1] += row_counts[r]
    flips = np.empty(row_counts[h], np.int64)
    fill = row_counts[:h].copy()
    for k in range(nflips):
        oy = flip_rows[k]
        x = flip_cols[k]
        for c in range(col_first[x], col_first[x] + col_count[x]):
            flips[fill[oy]] = c
            fill[oy] += 1
    # Every row: the row above with its flips applied.
    for r in range(h):
        for f in range(row_counts[r], row_counts[r + 1]):
            row[flips[f]] ^= 1
        for o in range(w):
            out[r, o] = row[o]


@jit
def _check_decode(runs, offsets, counts, height, width, row_map, col_map, out):
    """-1 if every mask and map is valid, else the first bad mask index (or ERR_SHAPE)."""
    n = offsets.shape[0]
    if out.shape[0] != n or out.shape[1] != row_map.shape[0] or out.shape[2] != col_map.shape[0]:
        return ERR_SHAPE
    for o in range(row_map.shape[0]):
        if row_map[o] < 0 or row_map[o] >= height or (o > 0 and row_map[o] < row_map[o - 1]):
            return ERR_SHAPE
    for o in range(col_map.shape[0]):
        if col_map[o] < 0 or col_map[o] >= width or (o > 0 and col_map[o] < col_map[o - 1]):
            return ERR_SHAPE
    return check_runs(runs, offsets, counts, np.int64(height) * width)


@jit
def _decode_plan(runs, offsets, counts, height, width, row_map, col_map, out):
    """Validate everything, then build the tables every mask's decode shares.

    Returns (status, go, first_row, col_first, col_count): ``go`` is False when there is
    nothing to write, either because the input is bad (``status`` is then the first bad mask
    or ERR_SHAPE) or because the output is empty (``status`` -1).
    """
    bad = _check_decode(runs, offsets, counts, height, width, row_map, col_map, out)
    empty = np.empty(0, np.int64)
    if bad != -1 or out.shape[1] == 0 or out.shape[2] == 0:
        return bad, False, empty, empty, empty
    first_row = _first_output_row(row_map, height)
    col_first, col_count = _output_columns(col_map, width)
    return -1, True, first_row, col_first, col_count


@jit
def decode_masks(runs, offsets, counts, height, width, row_map, col_map, out):
    """Decode masks ``m`` (runs[offsets[m]:offsets[m]+counts[m]]) into out[m] (N, h, w) uint8.

    row_map/col_map give the source row/column of each output row/column (identity for full
    size). Everything is validated before the first write: returns -1 on success, else the
    index of the first bad mask (or ERR_SHAPE), and out is untouched.
    """
    status, go, first_row, col_first, col_count = _decode_plan(
        runs, offsets, counts, height, width, row_map, col_map, out
    )
    if not go:
        return status
    for m in range(offsets.shape[0]):
        _decode_one(runs, offsets[m], counts[m], height, col_map, row_map[0], first_row,
                    col_first, col_count, out[m])  # fmt: skip
    return -1


@jit_parallel
def decode_masks_parallel(runs, offsets, counts, height, width, row_map, col_map, out):
    """decode_masks with masks spread over threads (numba prange); the same plan and body."""
    status, go, first_row, col_first, col_count = _decode_plan(
        runs, offsets, counts, height, width, row_map, col_map, out
    )
    if not go:
        return status
    for m in nb.prange(offsets.shape[0]):
        _decode_one(runs, offsets[m], counts[m], height, col_map, row_map[0], first_row,
                    col_first, col_count, out[m])  # fmt: skip
    return -1

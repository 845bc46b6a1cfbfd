"""Every numba kernel of the package: plain functions over preallocated arrays.

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

import numba as nb
import numpy as np

OK = 0
ERR_BAD_CHAR = -1
ERR_TRUNCATED = -2
ERR_NEGATIVE = -3
ERR_OVERFLOW = -4
ERR_OUT_TOO_SMALL = -5
ERR_SUM = -6
ERR_SHAPE = -7

MAX_RUN = 0xFFFFFFFF
_MAX_GROUPS = 12  # 60 bits: far beyond any uint32 delta, and no int64 shift overflow

_jit = nb.njit(cache=True, nogil=True)


@_jit
def parse_counts(data, out, total):
    """COCO counts string (uint8 array) -> runs in ``out``; returns the run count or ERR_*.

    ``total`` >= 0 requires the runs to sum to it (h * w); pass -1 to skip that check.
    """
    n = 0
    p = 0
    size = data.shape[0]
    running = np.int64(0)
    while p < size:
        x = np.int64(0)
        k = 0
        while True:
            if p >= size:
                return ERR_TRUNCATED
            c = np.int64(data[p]) - 48
            if c < 0 or c > 63:
                return ERR_BAD_CHAR
            p += 1
            if k >= _MAX_GROUPS:
                return ERR_OVERFLOW
            x |= (c & 0x1F) << (5 * k)
            k += 1
            if not (c & 0x20):
                if c & 0x10:
                    x |= np.int64(-1) << (5 * k)
                break
        if n > 2:
            x += np.int64(out[n - 2])
        if x < 0:
            return ERR_NEGATIVE
        if x > MAX_RUN:
            return ERR_OVERFLOW
        if n >= out.shape[0]:
            return ERR_OUT_TOO_SMALL
        out[n] = x
        running += x
        n += 1
    if total >= 0 and running != total:
        return ERR_SUM
    return n


@_jit
def encode_counts(runs, out):
    """Runs -> COCO counts string bytes in ``out``; returns the byte count or ERR_OUT_TOO_SMALL."""
    n = 0
    for i in range(runs.shape[0]):
        x = np.int64(runs[i])
        if i > 2:
            x -= np.int64(runs[i - 2])
        while True:
            c = x & 0x1F
            x >>= 5
            more = (x != -1) if (c & 0x10) else (x != 0)
            if more:
                c |= 0x20
            if n >= out.shape[0]:
                return ERR_OUT_TOO_SMALL
            out[n] = c + 48
            n += 1
            if not more:
                break
    return n


@_jit
def parse_counts_batch(data, offsets, sizes, total, runs, run_offsets, run_counts):
    """Parse strings data[offsets[m] : offsets[m] + sizes[m]] into one runs buffer.

    ``runs`` needs room for sum(sizes) runs (a run takes at least one character). Returns -1,
    or the index of the first string that is malformed, leaves ``data`` or does not sum to
    ``total``; its status is then in run_counts[m].
    """
    k = 0
    for m in range(offsets.shape[0]):
        start = offsets[m]
        end = start + sizes[m]
        if start < 0 or sizes[m] < 1 or end > data.shape[0] or k + sizes[m] > runs.shape[0]:
            run_counts[m] = ERR_OUT_TOO_SMALL
            return m
        n = parse_counts(data[start:end], runs[k : k + sizes[m]], total)
        run_counts[m] = n
        if n < 0:
            return m
        run_offsets[m] = k
        k += n
    return -1


@_jit
def runs_sum(runs, start, count):
    total = np.int64(0)
    for i in range(start, start + count):
        total += np.int64(runs[i])
    return total


@_jit
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


@_jit
def sample_map(src, dst):
    """Nearest-neighbour source index of each of ``dst`` outputs: floor((o + 0.5) * src / dst)."""
    out = np.empty(dst, np.int64)
    for o in range(dst):
        out[o] = ((2 * o + 1) * src) // (2 * dst)
    return out


@_jit
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


@_jit
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


@_jit
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


@_jit
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


@_jit
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


@_jit
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


@nb.njit(cache=True, nogil=True, parallel=True)
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


@_jit
def mask_to_runs(mask, out):
    """Dense (H, W) mask -> column-major runs in ``out``; returns the run count or ERR_*."""
    height = mask.shape[0]
    width = mask.shape[1]
    n = 0
    value = 0
    length = np.int64(0)
    for x in range(width):
        for y in range(height):
            v = 1 if mask[y, x] else 0
            if v != value:
                if n >= out.shape[0]:
                    return ERR_OUT_TOO_SMALL
                out[n] = length
                n += 1
                value = v
                length = 0
            length += 1
    if n >= out.shape[0]:
        return ERR_OUT_TOO_SMALL
    out[n] = length
    return n + 1


@_jit
def runs_area(runs, offsets, counts, out):
    """Foreground pixel count of each mask: the sum of its odd-indexed runs."""
    for m in range(offsets.shape[0]):
        total = np.int64(0)
        for j in range(offsets[m] + 1, offsets[m] + counts[m], 2):
            total += runs[j]
        out[m] = total


@_jit
def runs_bbox(runs, offsets, counts, height, out):
    """Tight [x, y, w, h] foreground box per mask, as pycocotools.mask.toBbox (0s if empty)."""
    for m in range(offsets.shape[0]):
        xs = np.int64(1) << 62
        ys = np.int64(1) << 62
        xe = np.int64(-1)
        ye = np.int64(-1)
        pos = np.int64(0)
        for j in range(counts[m]):
            r = np.int64(runs[offsets[m] + j])
            if j & 1 and r > 0:
                x0 = pos // height
                y0 = pos % height
                x1 = (pos + r - 1) // height
                y1 = (pos + r - 1) % height
                if x1 > x0:
                    y0 = 0
                    y1 = height - 1
                xs = min(xs, x0)
                xe = max(xe, x1)
                ys = min(ys, y0)
                ye = max(ye, y1)
            pos += r
        if xe < 0:
            out[m, 0] = out[m, 1] = out[m, 2] = out[m, 3] = 0.0
        else:
            out[m, 0] = xs
            out[m, 1] = ys
            out[m, 2] = xe - xs + 1
            out[m, 3] = ye - ys + 1


@_jit
def foreground_intervals(runs, offsets, counts):
    """Each mask's foreground as [start, end) column-major intervals: (starts, ends, bounds)."""
    n = offsets.shape[0]
    total = 0
    for m in range(n):
        total += counts[m] // 2
    starts = np.empty(total, np.int64)
    ends = np.empty(total, np.int64)
    bounds = np.empty(n + 1, np.int64)
    k = 0
    for m in range(n):
        bounds[m] = k
        pos = np.int64(0)
        for j in range(counts[m]):
            r = np.int64(runs[offsets[m] + j])
            if j & 1 and r > 0:
                starts[k] = pos
                ends[k] = pos + r
                k += 1
            pos += r
    bounds[n] = k
    return starts, ends, bounds


@_jit
def pairwise_intersections(starts, ends, bounds, out):
    """out[a, b] = |A ∩ B| pixels for every pair, by merging interval lists (no dense decode)."""
    n = bounds.shape[0] - 1
    for a in range(n):
        area = np.int64(0)
        for i in range(bounds[a], bounds[a + 1]):
            area += ends[i] - starts[i]
        out[a, a] = area
        for b in range(a + 1, n):
            i, i_end = bounds[a], bounds[a + 1]
            j, j_end = bounds[b], bounds[b + 1]
            inter = np.int64(0)
            if (
                i < i_end
                and j < j_end
                and ends[i_end - 1] > starts[j]
                and ends[j_end - 1] > starts[i]
            ):
                while i < i_end and j < j_end:
                    lo = max(starts[i], starts[j])
                    hi = min(ends[i], ends[j])
                    if hi > lo:
                        inter += hi - lo
                    if ends[i] < ends[j]:
                        i += 1
                    else:
                        j += 1
            out[a, b] = inter
            out[b, a] = inter

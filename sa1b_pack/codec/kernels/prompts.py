"""Pixels picked by rank from the runs, for prompt points: the q-th foreground (or background)
pixel of a mask, and the q-th pixel of a box that is not in the mask, without decoding it.

Positions are column-major offsets (x * height + y), the order the runs walk. A rank is found
by binary search over the cumulative sums of the runs of the wanted value; inside a box, by
counting each column's free pixels in one sweep of the runs (columns + runs, not box area),
then a binary search over the columns and a walk of one column's runs.
"""

from __future__ import annotations

import numpy as np

from .common import ERR_SHAPE, jit
from .decode import check_runs


@jit
def _most_runs(counts):
    most = np.int64(0)
    for m in range(counts.shape[0]):
        most = max(most, np.int64(counts[m]))
    return most


@jit
def _last_at_most(before, n, q):
    """The lo in [0, n) with before[lo] <= q < before[lo + 1], by binary search: ``before``
    ascending from before[0] = 0, and q < before[n] (the caller checks)."""
    lo, hi = 0, n
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if before[mid] <= q:
            lo = mid
        else:
            hi = mid
    return lo


@jit
def pixels_at_ranks(runs, offsets, counts, total, value, ranks, out):
    """out[m, p] = offset of the ranks[m, p]-th pixel equal to ``value`` (1 foreground, 0
    background) of mask m, counted column-major; -1 where the rank is negative.

    Returns -1, ERR_SHAPE, or the first mask whose runs are bad (outside the payload, not
    summing to ``total``) or that has a rank beyond its pixels of ``value``.
    """
    k = offsets.shape[0]
    if counts.shape[0] != k or ranks.shape[0] != k or out.shape != ranks.shape:
        return ERR_SHAPE
    bad = check_runs(runs, offsets, counts, total)
    if bad >= 0:
        return bad
    room = _most_runs(counts) // 2 + 2
    before = np.empty(room, np.int64)  # pixels of ``value`` before its i-th run
    starts = np.empty(room, np.int64)  # where its i-th run starts
    for m in range(k):
        n = 0
        seen = np.int64(0)
        pos = np.int64(0)
        for j in range(counts[m]):
            r = np.int64(runs[offsets[m] + j])
            if (j & 1) == value and r > 0:
                before[n] = seen
                starts[n] = pos
                n += 1
                seen += r
            pos += r
        before[n] = seen
        for p in range(ranks.shape[1]):
            q = ranks[m, p]
            if q < 0:
                out[m, p] = -1
                continue
            if q >= seen:
                return m
            lo = _last_at_most(before, n, q)
            out[m, p] = starts[lo] + q - before[lo]
    return -1


@jit
def _box_columns(runs, start, nruns, height, x0, y0, x1, y1, free, first, first_start):
    """free[c - x0] = pixels of column c, rows [y0, y1), not in the mask; first[c - x0] the
    run holding the column's row y0 and first_start[c - x0] where that run starts."""
    j = 0
    ps = np.int64(0)
    pe = np.int64(runs[start])
    for c in range(x0, x1):
        a = np.int64(c) * height + y0
        b = np.int64(c) * height + y1
        while pe <= a and j < nruns - 1:
            j += 1
            ps = pe
            pe += runs[start + j]
        first[c - x0] = j
        first_start[c - x0] = ps
        inside = np.int64(0)
        jj = j
        qs = ps
        qe = pe
        while qs < b:
            if jj & 1:
                inside += min(qe, b) - max(qs, a)
            jj += 1
            if jj >= nruns:
                break
            qs = qe
            qe += runs[start + jj]
        free[c - x0] = (y1 - y0) - inside


@jit
def _check_boxes(runs, offsets, counts, height, width, boxes):
    """-1 if the runs and the boxes ([x0, y0, x1, y1) pixel ranges) are valid, else as above."""
    k = offsets.shape[0]
    if counts.shape[0] != k or boxes.shape[0] != k or boxes.shape[1] != 4:
        return ERR_SHAPE
    for m in range(k):
        x0, y0, x1, y1 = boxes[m, 0], boxes[m, 1], boxes[m, 2], boxes[m, 3]
        if x0 < 0 or y0 < 0 or x1 > width or y1 > height or x0 > x1 or y0 > y1:
            return ERR_SHAPE
    return check_runs(runs, offsets, counts, np.int64(height) * width)


@jit
def box_background_counts(runs, offsets, counts, height, width, boxes, out):
    """out[m] = pixels of box m ([x0, y0, x1, y1) pixel ranges) that are not in mask m.

    Returns -1, ERR_SHAPE (a box outside the image, or shapes that disagree) or the first
    mask whose runs are bad.
    """
    bad = _check_boxes(runs, offsets, counts, height, width, boxes)
    if bad != -1 or out.shape[0] != offsets.shape[0]:
        return ERR_SHAPE if bad == -1 else bad
    free = np.empty(width + 1, np.int64)
    first = np.empty(width + 1, np.int64)
    first_start = np.empty(width + 1, np.int64)
    for m in range(offsets.shape[0]):
        x0, y0, x1, y1 = boxes[m, 0], boxes[m, 1], boxes[m, 2], boxes[m, 3]
        _box_columns(runs, offsets[m], counts[m], height, x0, y0, x1, y1, free, first,
                     first_start)  # fmt: skip
        total = np.int64(0)
        for c in range(x1 - x0):
            total += free[c]
        out[m] = total
    return -1


@jit
def box_background_at_ranks(runs, offsets, counts, height, width, boxes, ranks, out):
    """out[m, p] = offset of the ranks[m, p]-th pixel (column-major) of box m that is not in
    mask m; -1 where the rank is negative. Returns as ``box_background_counts``, and the
    first mask with a rank beyond its box's free pixels."""
    bad = _check_boxes(runs, offsets, counts, height, width, boxes)
    if bad != -1 or ranks.shape[0] != offsets.shape[0] or out.shape != ranks.shape:
        return ERR_SHAPE if bad == -1 else bad
    free = np.empty(width + 1, np.int64)
    first = np.empty(width + 1, np.int64)
    first_start = np.empty(width + 1, np.int64)
    before = np.empty(width + 1, np.int64)  # free pixels of the box's columns before column c
    for m in range(offsets.shape[0]):
        start = offsets[m]
        x0, y0, x1, y1 = boxes[m, 0], boxes[m, 1], boxes[m, 2], boxes[m, 3]
        ncols = x1 - x0 if y1 > y0 else 0
        _box_columns(runs, start, counts[m], height, x0, y0, x1, y1, free, first, first_start)
        before[0] = 0
        for c in range(ncols):
            before[c + 1] = before[c] + free[c]
        for p in range(ranks.shape[1]):
            q = ranks[m, p]
            if q < 0:
                out[m, p] = -1
                continue
            if q >= before[ncols]:
                return m
            lo = _last_at_most(before, ncols, q)  # column x0 + lo
            need = q - before[lo]
            a = np.int64(x0 + lo) * height + y0
            b = a + (y1 - y0)
            j = first[lo]
            qs = first_start[lo]
            qe = qs + np.int64(runs[start + j])
            while True:  # the column holds need + 1 free pixels: this ends inside it
                lo_px = max(qs, a)
                hi_px = min(qe, b)
                if (j & 1) == 0 and hi_px > lo_px:
                    if need < hi_px - lo_px:
                        out[m, p] = lo_px + need
                        break
                    need -= hi_px - lo_px
                j += 1
                qs = qe
                qe += np.int64(runs[start + j])
    return -1

"""Geometry from the runs alone: area, box, foreground intervals, overlaps."""

from __future__ import annotations

import numpy as np

from .common import jit


@jit
def runs_area(runs, offsets, counts, out):
    """Foreground pixel count of each mask: the sum of its odd-indexed runs."""
    for m in range(offsets.shape[0]):
        total = np.int64(0)
        for j in range(offsets[m] + 1, offsets[m] + counts[m], 2):
            total += runs[j]
        out[m] = total


@jit
def runs_bbox(runs, offsets, counts, height, out):
    """Tight [x, y, w, h] foreground box per mask, as pycocotools.mask.toBbox (0s if empty).

    The column of the walk is kept by subtraction (a foreground run is mostly one column on
    from the last), so few runs pay an integer division; once the rows span the full height,
    only the last foreground pixel is still needed. Packing checks every mask's box with it.
    """
    h = np.int64(height)
    for m in range(offsets.shape[0]):
        xs = np.int64(-1)
        ys = h
        ye = np.int64(-1)
        last = np.int64(-1)  # the last foreground pixel
        pos = np.int64(0)
        col = np.int64(0)  # the column holding col_start ... col_start + h - 1
        col_start = np.int64(0)
        full = False  # every row is covered: only ``last`` can change the box
        base = offsets[m]
        for j in range(1, counts[m], 2):  # (0s, 1s) pairs: pos is the 1s' start
            pos += np.int64(runs[base + j - 1])
            r = np.int64(runs[base + j])
            if r > 0:
                last = pos + r - 1
                if not full:
                    d = pos - col_start
                    if d >= 2 * h:
                        k = d // h
                        col += k
                        col_start += k * h
                        d -= k * h
                    elif d >= h:
                        col += 1
                        col_start += h
                        d -= h
                    if xs < 0:
                        xs = col
                    e = d + r - 1
                    if e >= h:  # the run goes on into the next column: every row
                        ys = 0
                        ye = h - 1
                    else:
                        ys = min(ys, d)
                        ye = max(ye, e)
                    full = ys == 0 and ye == h - 1
            pos += r
        if last < 0:
            out[m, 0] = out[m, 1] = out[m, 2] = out[m, 3] = 0.0
        else:
            out[m, 0] = xs
            out[m, 1] = ys
            out[m, 2] = last // h - xs + 1
            out[m, 3] = ye - ys + 1


@jit
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


@jit
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


@jit
def runs_moments(runs, offsets, counts, height, out):
    """out[m] = [area, sum of x, sum of y] over mask m's foreground pixels, exact in int64.

    A run covers pixels pos .. pos + r - 1 column-major: a partial first column, whole
    columns, a partial last column, each an arithmetic series summed in closed form.
    """
    for m in range(offsets.shape[0]):
        area = np.int64(0)
        sum_x = np.int64(0)
        sum_y = np.int64(0)
        pos = np.int64(0)
        for j in range(counts[m]):
            r = np.int64(runs[offsets[m] + j])
            if j & 1 and r > 0:
                x0 = pos // height
                y0 = pos % height
                x1 = (pos + r - 1) // height
                y1 = (pos + r - 1) % height
                if x0 == x1:
                    sum_x += x0 * r
                    sum_y += (y0 + y1) * r // 2
                else:
                    first = height - y0
                    sum_x += x0 * first
                    sum_y += (y0 + height - 1) * first // 2
                    full = x1 - x0 - 1
                    if full > 0:
                        sum_x += height * ((x0 + x1) * full // 2)
                        sum_y += full * (height * (height - 1) // 2)
                    sum_x += x1 * (y1 + 1)
                    sum_y += y1 * (y1 + 1) // 2
                area += r
            pos += r
        out[m, 0] = area
        out[m, 1] = sum_x
        out[m, 2] = sum_y

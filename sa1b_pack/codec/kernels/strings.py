"""COCO compressed counts strings <-> runs, one string or many stored back to back."""

from __future__ import annotations

import numpy as np

from .common import (
    ERR_BAD_CHAR,
    ERR_NEGATIVE,
    ERR_OUT_TOO_SMALL,
    ERR_OVERFLOW,
    ERR_SUM,
    ERR_TRUNCATED,
    MAX_GROUPS,
    MAX_RUN,
    jit,
)


@jit
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
            if k >= MAX_GROUPS:
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


@jit
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


@jit
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


@jit
def encode_counts_batch(runs, offsets, counts, total, out, sizes):
    """Checked runs of many masks, runs[offsets[m] : offsets[m] + counts[m]] (int64, e.g. the
    uncompressed RLE counts of SAM's mask generator), -> COCO strings back to back in ``out``.

    ``out`` needs 7 bytes per run (a delta of two uint32 runs takes at most 7 characters).
    Returns -1, or the index of the first mask with a negative run (ERR_NEGATIVE), a run past
    32 bits (ERR_OVERFLOW) or runs not summing to ``total`` (ERR_SUM); its status is then in
    sizes[m]. Nothing is encoded for a mask before its runs are checked.
    """
    k = 0
    for m in range(offsets.shape[0]):
        start = offsets[m]
        end = start + counts[m]
        if start < 0 or counts[m] < 0 or end > runs.shape[0]:
            sizes[m] = ERR_OUT_TOO_SMALL
            return m
        running = np.int64(0)
        for i in range(start, end):
            r = np.int64(runs[i])
            if r < 0:
                sizes[m] = ERR_NEGATIVE
                return m
            if r > MAX_RUN:
                sizes[m] = ERR_OVERFLOW
                return m
            running += r
        if running != total:
            sizes[m] = ERR_SUM
            return m
        n = encode_counts(runs[start:end], out[k:])
        if n < 0:
            sizes[m] = n
            return m
        sizes[m] = n
        k += n
    return -1

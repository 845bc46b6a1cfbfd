"""Pure-Python COCO RLE: the slow, obvious reference the numba kernels are tested against.

Follows pycocotools' ``common/maskApi.c`` (``rleToString``/``rleFrString``) line by line,
with Python's unbounded ints instead of C's ``int``. Never used on a hot path.
"""

from __future__ import annotations

import numpy as np

FIRST_CHAR = 48  # '0'
LAST_CHAR = 48 + 63  # 'o'


def string_to_runs(counts: str | bytes) -> list[int]:
    """Decode a COCO compressed counts string into run lengths; ValueError if malformed."""
    data = counts.encode("ascii") if isinstance(counts, str) else bytes(counts)
    runs: list[int] = []
    p = 0
    while p < len(data):
        x = 0
        k = 0
        while True:
            if p >= len(data):
                raise ValueError("counts string ends inside a continuation")
            c = data[p] - FIRST_CHAR
            if not 0 <= c <= 63:
                raise ValueError(f"counts string has a character outside '0'..'o' at {p}")
            p += 1
            x |= (c & 0x1F) << (5 * k)
            k += 1
            if not c & 0x20:
                if c & 0x10:
                    x |= -1 << (5 * k)
                break
        if len(runs) > 2:
            x += runs[-2]
        if x < 0:
            raise ValueError(f"counts string decodes to a negative run at run {len(runs)}")
        if x > 0xFFFFFFFF:
            raise ValueError(f"counts string decodes to a run over 2**32-1 at run {len(runs)}")
        runs.append(x)
    return runs


def runs_to_string(runs: list[int] | np.ndarray) -> str:
    """Encode run lengths as a COCO compressed counts string."""
    cnts = [int(r) for r in runs]
    out = []
    for i, x in enumerate(cnts):
        if i > 2:
            x -= cnts[i - 2]
        while True:
            c = x & 0x1F
            x >>= 5
            more = (x != -1) if (c & 0x10) else (x != 0)
            if more:
                c |= 0x20
            out.append(chr(c + FIRST_CHAR))
            if not more:
                break
    return "".join(out)


def runs_to_mask(runs: list[int] | np.ndarray, height: int, width: int) -> np.ndarray:
    """Dense (H, W) uint8 mask; runs walk the image in column-major order."""
    if sum(int(r) for r in runs) != height * width:
        raise ValueError("runs do not sum to height * width")
    flat = np.zeros(height * width, dtype=np.uint8)
    pos = 0
    for i, r in enumerate(runs):
        if i % 2 == 1:
            flat[pos : pos + int(r)] = 1
        pos += int(r)
    return flat.reshape(width, height).T.copy()


def mask_to_runs(mask: np.ndarray) -> list[int]:
    """Run lengths of a dense (H, W) mask, column-major, starting with a run of zeros."""
    flat = np.asarray(mask).T.ravel()
    runs = []
    value = 0
    length = 0
    for v in flat:
        if bool(v) != bool(value):
            runs.append(length)
            value = 1 - value
            length = 0
        length += 1
    runs.append(length)
    return runs


def runs_area(runs: list[int] | np.ndarray) -> int:
    """Foreground pixels: the sum of the odd-indexed runs."""
    return sum(int(r) for r in runs[1::2])


def runs_bbox(runs: list[int] | np.ndarray, height: int, width: int) -> list[float]:
    """Tight [x, y, w, h] box of the foreground, as pycocotools.mask.toBbox; zeros if empty."""
    xs, ys, xe, ye = width, height, -1, -1
    pos = 0
    for i, r in enumerate(runs):
        r = int(r)
        if i % 2 == 1 and r > 0:
            first, last = pos, pos + r - 1
            x0, y0 = divmod(first, height)
            x1, y1 = divmod(last, height)
            if x1 > x0:
                y0, y1 = 0, height - 1
            xs, xe = min(xs, x0), max(xe, x1)
            ys, ye = min(ys, y0), max(ye, y1)
        pos += r
    if xe < 0:
        return [0.0, 0.0, 0.0, 0.0]
    return [float(xs), float(ys), float(xe - xs + 1), float(ye - ys + 1)]

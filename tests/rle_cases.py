"""Masks and COCO strings shared by the RLE tests: edge cases and hypothesis strategies."""

from __future__ import annotations

import numpy as np
import pycocotools.mask as coco
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp


def coco_string(mask: np.ndarray) -> str:
    """The oracle: pycocotools' counts string of a dense (H, W) mask."""
    return coco.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"].decode("ascii")


def coco_rle(mask: np.ndarray) -> dict:
    return coco.encode(np.asfortranarray(mask.astype(np.uint8)))


def edge_masks() -> list[np.ndarray]:
    """Empty, full, single pixel, 1xN, Nx1, corners, stripes, checkerboard."""
    cases = [
        np.zeros((5, 7), np.uint8),
        np.ones((5, 7), np.uint8),
        np.ones((1, 1), np.uint8),
        np.zeros((1, 1), np.uint8),
        np.ones((1, 9), np.uint8),
        np.ones((9, 1), np.uint8),
        (np.arange(9) % 2).astype(np.uint8).reshape(1, 9),
        (np.arange(9) % 2).astype(np.uint8).reshape(9, 1),
        np.indices((6, 8)).sum(0).astype(np.uint8) % 2,
    ]
    single = np.zeros((4, 6), np.uint8)
    single[3, 5] = 1
    cases.append(single)
    first = np.zeros((4, 6), np.uint8)
    first[0, 0] = 1
    cases.append(first)
    rows = np.zeros((6, 5), np.uint8)
    rows[2:4] = 1
    cases.append(rows)
    cols = np.zeros((6, 5), np.uint8)
    cols[:, 1:3] = 1
    cases.append(cols)
    big = np.zeros((300, 40), np.uint8)  # runs longer than 32 and deltas needing many groups
    big[7:290, 3:35] = 1
    big[100:120, 10:12] = 0
    cases.append(big)
    return cases


@st.composite
def masks(draw, max_side: int = 24) -> np.ndarray:
    """Random dense masks: noise of any density, or blocky shapes with long runs."""
    h = draw(st.integers(1, max_side))
    w = draw(st.integers(1, max_side))
    kind = draw(st.sampled_from(["noise", "blocks", "array"]))
    if kind == "array":
        return draw(hnp.arrays(np.uint8, (h, w), elements=st.integers(0, 1)))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if kind == "noise":
        return (rng.random((h, w)) < rng.random()).astype(np.uint8)
    mask = np.zeros((h, w), np.uint8)
    for _ in range(rng.integers(0, 4)):
        y0, x0 = rng.integers(0, h), rng.integers(0, w)
        y1, x1 = rng.integers(y0, h + 1), rng.integers(x0, w + 1)
        mask[y0:y1, x0:x1] ^= 1
    return mask

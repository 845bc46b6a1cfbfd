"""Uncompressed RLE (a list of run lengths) -> COCO string: bit-exact with pycocotools'
frPyObjects, and a clear ValueError for what pycocotools lets through."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as coco

from sa1b_pack.codec.rle import encode_strings, string_to_runs, uncompressed_to_string


def coco_string(counts: list[int], h: int, w: int) -> str:
    return coco.frPyObjects({"size": [h, w], "counts": counts}, h, w)["counts"].decode("ascii")


@pytest.mark.parametrize(
    "counts",
    [
        [48],
        [0, 48],  # whole image foreground: a zero-length first run
        [0, 0, 10, 5, 33],  # two zero-length runs first
        [3, 2, 0, 0, 43],  # zero-length runs in the middle
        [3, 2, 40, 3, 0],  # a zero-length last run
        [1] * 48,
        [47, 1],
    ],
)
def test_equal_to_pycocotools_small(counts: list[int]) -> None:
    got = uncompressed_to_string(counts, 6, 8)
    assert got == coco_string(counts, 6, 8)
    assert string_to_runs(got, 6, 8).tolist() == counts


def test_equal_to_pycocotools_random_masks() -> None:
    rng = np.random.default_rng(3)
    for _ in range(200):
        h, w = (int(v) for v in rng.integers(1, 300, 2))
        mask = np.asfortranarray(rng.random((h, w)) < rng.random() ** 3)
        uncompressed = coco.encode(mask)  # compressed; decode its runs back for a list
        runs = string_to_runs(uncompressed["counts"], h, w).tolist()
        if rng.random() < 0.3:  # zero-length first runs, as real files have
            runs = [0, 0, *runs]
        assert uncompressed_to_string(runs, h, w) == coco_string(runs, h, w)


def test_large_runs_and_big_deltas() -> None:
    h, w = 60_000, 60_000  # runs near 2**32 - 1: deltas take every continuation group
    runs = [h * w - 7, 7]
    assert uncompressed_to_string(runs, h, w) == coco_string(runs, h, w)
    runs = [1, h * w - 3, 1, 1]
    assert uncompressed_to_string(runs, h, w) == coco_string(runs, h, w)


def test_many_masks_back_to_back() -> None:
    masks = [[48], [0, 48], [0, 0, 10, 5, 33], [3, 2, 43]]
    flat = np.concatenate([np.array(m) for m in masks])
    counts = np.array([len(m) for m in masks])
    data, sizes = encode_strings(flat, np.cumsum(counts) - counts, counts, 6, 8)
    assert data.decode() == "".join(coco_string(m, 6, 8) for m in masks)
    assert sizes.tolist() == [len(coco_string(m, 6, 8)) for m in masks]
    with pytest.raises(ValueError, match="mask 1: a negative run"):
        encode_strings(np.array([48, 50, -2]), np.array([0, 1]), np.array([1, 2]), 6, 8)


@pytest.mark.parametrize(
    ("counts", "why"),
    [
        ([50, -2], "a negative run"),
        ([47], "do not sum"),
        ([49], "do not sum"),
        ([], "do not sum"),
        ([40, 8.0], "integers, got float"),
        ([40, True, 7], "integers, got bool"),
        ([40, "8"], "integers, got str"),
        ([2**40, 1], "overflows 32 bits"),
        ([2**70, 1], "overflows 32 bits"),
    ],
)
def test_bad_runs_are_named(counts: list, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        uncompressed_to_string(counts, 6, 8)

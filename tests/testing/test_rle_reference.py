"""The pure-Python reference against pycocotools: the oracle's oracle."""

from __future__ import annotations

import numpy as np
import pycocotools.mask as coco
import pytest
from hypothesis import given, settings

from sa1b_pack.testing import rle_reference as rle
from tests.rle_cases import coco_rle, coco_string, edge_masks, masks


@pytest.mark.parametrize("mask", edge_masks(), ids=lambda m: f"{m.shape}")
def test_reference_matches_pycocotools_on_edge_cases(mask: np.ndarray) -> None:
    check_reference(mask)


@given(masks())
@settings(max_examples=150, deadline=None)
def test_reference_matches_pycocotools(mask: np.ndarray) -> None:
    check_reference(mask)


def check_reference(mask: np.ndarray) -> None:
    h, w = mask.shape
    encoded = coco_rle(mask)
    counts = coco_string(mask)
    runs = rle.string_to_runs(counts)
    assert runs == rle.mask_to_runs(mask)
    assert rle.runs_to_string(runs) == counts
    np.testing.assert_array_equal(rle.runs_to_mask(runs, h, w), coco.decode(encoded))
    assert rle.runs_area(runs) == coco.area(encoded)
    assert rle.runs_bbox(runs, h, w) == coco.toBbox(encoded).tolist()


def test_leading_zero_length_runs_survive() -> None:
    runs = [0, 0, 5, 1, 10]
    counts = rle.runs_to_string(runs)
    assert rle.string_to_runs(counts) == runs
    decoded = coco.decode({"size": [4, 4], "counts": counts.encode()})
    np.testing.assert_array_equal(rle.runs_to_mask(runs, 4, 4), decoded)
    assert rle.runs_bbox(runs, 4, 4) == coco.toBbox({"size": [4, 4], "counts": counts}).tolist()


@pytest.mark.parametrize(
    ("counts", "message"),
    [
        ("0p", "outside"),
        ("0 ", "outside"),
        ("0" + chr(48 + 0x20), "continuation"),
        ("0" + chr(48 + 0x10), "negative"),
    ],
)
def test_malformed_strings_raise(counts: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rle.string_to_runs(counts)


def test_runs_to_mask_checks_the_sum() -> None:
    with pytest.raises(ValueError, match="sum"):
        rle.runs_to_mask([3, 2], 2, 3)

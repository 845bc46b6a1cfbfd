"""Pixels by rank from the runs (codec/points.py) against the pycocotools + np.nonzero reference,
for every rank of every mask, foreground, background and inside boxes; bad input refused."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sa1b_pack.codec import points
from sa1b_pack.testing import prompt_reference as ref
from sa1b_pack.testing import rle_reference
from tests.rle_cases import edge_masks
from tests.rle_cases import masks as mask_strategy


def mask_to_runs(mask: np.ndarray) -> np.ndarray:
    """The runs of a dense mask, as the kernels take them (the reference codec's encoding)."""
    return np.array(rle_reference.mask_to_runs(mask), "<u4")


def pack(runs_list: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    counts = np.array([len(r) for r in runs_list], np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    return np.concatenate(runs_list).astype("<u4"), offsets, counts


def every_rank(counts: np.ndarray) -> np.ndarray:
    """(K, max + 1) ranks 0 .. count - 1 of each mask, padded with -1 (no point)."""
    ranks = np.full((len(counts), int(counts.max(initial=0)) + 1), -1, np.int64)
    for m, n in enumerate(counts):
        ranks[m, :n] = np.arange(n)
    return ranks


def random_boxes(rng: np.random.Generator, k: int, h: int, w: int) -> np.ndarray:
    x = np.sort(rng.integers(0, w + 1, (k, 2)), axis=1)
    y = np.sort(rng.integers(0, h + 1, (k, 2)), axis=1)
    return np.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], axis=1)


def check(dense: list[np.ndarray], runs_list: list[np.ndarray], boxes: np.ndarray) -> None:
    h, w = dense[0].shape
    runs, offsets, counts = pack(runs_list)
    assert all((a == b).all() for a, b in zip(ref.dense_masks(runs_list, h, w), dense,
                                              strict=True))  # fmt: skip
    for foreground in (True, False):
        have = np.array([(m.astype(bool) == foreground).sum() for m in dense])
        ranks = every_rank(have)
        got = points.pixels_at_ranks(runs, offsets, counts, h, w, ranks, foreground=foreground)
        np.testing.assert_array_equal(got, ref.pixels_at_ranks(dense, ranks, foreground))
    free = points.box_background_counts(runs, offsets, counts, h, w, boxes)
    np.testing.assert_array_equal(free, ref.box_background_counts(dense, boxes))
    ranks = every_rank(free)
    got = points.box_background_at_ranks(runs, offsets, counts, h, w, boxes, ranks)
    np.testing.assert_array_equal(got, ref.box_background_at_ranks(dense, boxes, ranks))


@given(st.lists(mask_strategy(max_side=20), min_size=1, max_size=4), st.integers(0, 2**32 - 1))
@settings(max_examples=200, deadline=None)
def test_every_rank_equals_the_reference(masks: list[np.ndarray], seed: int) -> None:
    h, w = masks[0].shape
    dense = [np.resize(m, (h, w)).astype(np.uint8) for m in masks]  # one image size per call
    boxes = random_boxes(np.random.default_rng(seed), len(dense), h, w)
    check(dense, [mask_to_runs(m) for m in dense], boxes)


@pytest.mark.parametrize("mask", edge_masks(), ids=lambda m: f"{m.shape}")
def test_edge_masks_with_whole_and_empty_boxes(mask: np.ndarray) -> None:
    h, w = mask.shape
    boxes = np.array([[0, 0, w, h], [0, 0, 0, 0], [w // 2, 0, w, h // 2 + 1]])
    check([mask] * 3, [mask_to_runs(mask)] * 3, boxes)


def test_zero_length_runs_in_the_middle() -> None:
    """Uncompressed RLE may hold zero runs anywhere: [2, 0, 3, 1, 0, 4] is 1 foreground pixel."""
    runs = np.array([2, 0, 3, 1, 0, 4], np.uint32)  # 10 pixels, foreground at offset 5
    mask = ref.dense_masks([runs], 5, 2)[0]
    check([mask], [runs], np.array([[0, 0, 2, 5]]))
    got = points.pixels_at_ranks(runs, [0], [6], 5, 2, np.array([[0]]))
    assert got.tolist() == [[5]]


def test_reused_out_and_negative_ranks() -> None:
    mask = np.zeros((4, 5), np.uint8)
    mask[1:3, 1:4] = 1
    runs = mask_to_runs(mask)
    out = np.full((1, 3), 99, np.int64)
    got = points.pixels_at_ranks(runs, [0], [len(runs)], 4, 5, np.array([[5, -1, 0]]), out=out)
    assert got is out and out.tolist() == [[3 * 4 + 2, -1, 1 * 4 + 1]]


def test_bad_input_is_a_clear_error() -> None:
    mask = np.zeros((4, 5), np.uint8)
    mask[1:3, 1:4] = 1
    runs = mask_to_runs(mask)
    one, n = np.array([0]), np.array([len(runs)])
    with pytest.raises(ValueError, match=r"mask 0: .* rank beyond its foreground"):
        points.pixels_at_ranks(runs, one, n, 4, 5, np.array([[6]]))
    with pytest.raises(ValueError, match="mask 0"):
        points.pixels_at_ranks(runs, one, n, 4, 6, np.array([[0]]))  # runs do not sum to 24
    with pytest.raises(ValueError, match="box outside the image"):
        points.box_background_counts(runs, one, n, 4, 5, np.array([[0, 0, 6, 4]]))
    with pytest.raises(ValueError, match="box outside the image"):
        points.box_background_counts(runs, one, n, 4, 5, np.array([[3, 0, 2, 4]]))
    with pytest.raises(ValueError, match="mask 0"):  # the box holds 20 - 6 = 14 free pixels
        points.box_background_at_ranks(runs, one, n, 4, 5, np.array([[0, 0, 5, 4]]),
                                       np.array([[14]]))  # fmt: skip
    with pytest.raises(ValueError, match="shapes disagree"):
        points.pixels_at_ranks(runs, one, n, 4, 5, np.array([[0], [0]]))
    with pytest.raises(ValueError, match="out must be"):
        points.pixels_at_ranks(runs, one, n, 4, 5, np.array([[0]]), out=np.empty((1, 1)))

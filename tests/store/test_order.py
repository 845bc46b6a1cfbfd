"""Epoch orders: pure functions of (seed, epoch), every sample once, and the blocks order
keeps each rank inside a bounded window of parts."""

from __future__ import annotations

import numpy as np
import pytest

from sa1b_pack.store.order import epoch_order

SIZES = np.array([5, 0, 17, 3, 11, 8, 1, 13, 9, 4, 6, 12])  # an empty part too


def parts_of(order: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    return np.searchsorted(np.cumsum(sizes), order, side="right")


def most_parts_open(parts: np.ndarray) -> int:
    """The most parts a reader of this sequence has begun and not finished at any step."""
    first = {p: i for i, p in reversed(list(enumerate(parts.tolist())))}
    last = {p: i for i, p in enumerate(parts.tolist())}
    open_at = np.zeros(len(parts) + 1, np.int64)
    for p in first:
        open_at[first[p]] += 1
        open_at[last[p] + 1] -= 1
    return int(np.cumsum(open_at).max())


@pytest.mark.parametrize("order", ["uniform", "blocks"])
def test_every_sample_once_and_a_function_of_seed_and_epoch(order: str) -> None:
    a = epoch_order(SIZES, seed=3, epoch=1, order=order, window=3)
    assert sorted(a.tolist()) == list(range(SIZES.sum()))
    np.testing.assert_array_equal(a, epoch_order(SIZES, seed=3, epoch=1, order=order, window=3))
    assert not np.array_equal(a, epoch_order(SIZES, seed=3, epoch=2, order=order, window=3))
    assert not np.array_equal(a, epoch_order(SIZES, seed=4, epoch=1, order=order, window=3))


@pytest.mark.parametrize("window", [1, 2, 3, 5])
@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_blocks_keep_every_rank_within_window_parts(window: int, world: int) -> None:
    sizes = np.random.default_rng(0).integers(0, 40, size=60)
    for epoch in range(3):
        order = epoch_order(sizes, seed=0, epoch=epoch, order="blocks", window=window)
        for rank in range(world):
            assert most_parts_open(parts_of(order[rank::world], sizes)) <= window
    uniform = epoch_order(sizes, seed=0, epoch=0, order="uniform")
    assert most_parts_open(parts_of(uniform, sizes)) > 5 * window  # the difference it makes


def test_blocks_mix_within_a_block() -> None:
    sizes = np.full(4, 50)
    order = epoch_order(sizes, seed=1, epoch=0, order="blocks", window=4)
    parts = parts_of(order, sizes)
    assert len(set(parts[:20].tolist())) > 1  # not part after part: samples are interleaved
    assert not np.array_equal(order, np.sort(order))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="order must be one of"):
        epoch_order(SIZES, seed=0, epoch=0, order="sorted")
    with pytest.raises(ValueError, match="window"):
        epoch_order(SIZES, seed=0, epoch=0, order="blocks", window=0)

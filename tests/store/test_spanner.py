"""Spanner: global index <-> (part, local index), with empty parts and negative indices."""

from __future__ import annotations

import pytest

from sa1b_pack.store.spanner import Spanner


def expected_locations(sizes: list[int]) -> list[tuple[int, int]]:
    return [(p, k) for p, size in enumerate(sizes) for k in range(size)]


@pytest.mark.parametrize(
    "sizes",
    [[3], [3, 4, 1], [0, 2, 0, 0, 3, 0], [1, 0, 1], [5, 0], [0, 0, 1]],
)
def test_locate_every_index(sizes: list[int]) -> None:
    spanner = Spanner(sizes)
    expected = expected_locations(sizes)
    assert len(spanner) == len(expected) == sum(sizes)
    assert [spanner.locate(i) for i in range(len(expected))] == expected
    assert [spanner.locate(i - len(expected)) for i in range(len(expected))] == expected
    for i in range(len(expected)):
        part, local = spanner.locate(i)
        assert type(part) is int and type(local) is int


@pytest.mark.parametrize("sizes", [[], [0], [0, 0], [2, 3]])
def test_out_of_range(sizes: list[int]) -> None:
    spanner = Spanner(sizes)
    total = sum(sizes)
    for bad in (total, total + 7, -total - 1, -total - 10):
        with pytest.raises(IndexError):
            spanner.locate(bad)


def test_negative_sizes_rejected() -> None:
    with pytest.raises(ValueError):
        Spanner([2, -1])

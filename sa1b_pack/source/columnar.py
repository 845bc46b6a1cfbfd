"""One image's annotations converted a whole column at a time: the packer's fast path.

A well-formed annotation list is checked and converted per column (the types of all of a
column's values at once, one ``np.array`` per column, every COCO string of the image parsed in
one kernel call) instead of value by value in Python. Anything irregular (a missing key, a
wrong type, a value out of range, a malformed string) raises ``Irregular``: the caller then
re-parses the image value by value, which finds the same first problem the same way and
words it exactly (annotation.py). So this path only has to be strict, never eloquent.

Uncompressed RLE counts (lists of runs) are checked and encoded to COCO strings in one kernel
call too, and every string's runs are kept for the derived checks (checks.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import chain
from operator import itemgetter
from typing import Any

import numpy as np

from ..codec.rle import encode_strings, parse_strings
from ..format.columns import Column

NUMBERS = frozenset((int, float))  # exact JSON types: bool is excluded, as value by value
INTS = frozenset((int,))
LISTS = frozenset((list,))
SIZE_TYPES = frozenset((int,))


class Irregular(Exception):
    """Something in this image is not plainly well-formed: parse it value by value."""


@dataclass
class MaskColumns:
    masks: dict[str, np.ndarray]
    point_counts: np.ndarray
    points: np.ndarray
    counts_data: bytes
    counts_sizes: np.ndarray
    segmentations: list[dict]
    runs: np.ndarray  # every mask's runs, for the derived checks; not stored
    run_offsets: np.ndarray
    run_counts: np.ndarray
    converted: np.ndarray  # (K,) int64: masks whose counts were uncompressed RLE, encoded here


def _types_within(values: Any, allowed: frozenset) -> None:
    if not set(map(type, values)) <= allowed:
        raise Irregular


def _integers(values: list, limit: int) -> np.ndarray:
    _types_within(values, INTS)
    try:
        array = np.array(values, np.int64)
    except OverflowError:
        raise Irregular from None
    if len(array) and (array.min() < -limit - 1 or array.max() > limit):
        raise Irregular
    return array


def _numbers(values: list) -> np.ndarray:
    _types_within(values, NUMBERS)
    try:
        return np.array(values, np.float64)
    except OverflowError:
        raise Irregular from None


def _rows(values: list, width: int) -> list:
    """The values of fixed-length lists, flattened; Irregular unless each is a list of ``width``."""
    _types_within(values, LISTS)
    if set(map(len, values)) - {width}:
        raise Irregular
    return list(chain.from_iterable(values))


def convert_column(column: Column, values: list, limit: int) -> Any:
    """A column's values (one per mask) -> its numpy array; ragged points -> (counts, points)."""
    if column.width is not None:
        return _numbers(_rows(values, column.width)).reshape(-1, column.width)
    if column.ragged:
        _types_within(values, LISTS)
        counts = np.fromiter(map(len, values), np.int64, len(values))
        return counts, _numbers(_rows(list(chain.from_iterable(values)), 2)).reshape(-1, 2)
    if column.numpy_dtype.kind == "f":
        return _numbers(values)
    return _integers(values, limit).astype(column.numpy_dtype)


def convert_masks(
    anns: list, columns: tuple[tuple[Column, int], ...], height: int, width: int
) -> MaskColumns:
    """Every plain column of ``anns`` plus the segmentations, checked against (height, width)
    and parsed to runs (kept for the checks); Irregular at the first doubt."""
    _types_within(anns, frozenset((dict,)))
    keys = [column.source for column, _ in columns]
    try:
        rows = list(map(itemgetter(*keys, "segmentation"), anns))
        by_column = list(zip(*rows, strict=True)) if rows else [()] * (len(keys) + 1)
        segmentations = list(by_column[-1])
        _types_within(segmentations, frozenset((dict,)))
        sizes = list(map(itemgetter("size"), segmentations))
        strings = list(map(itemgetter("counts"), segmentations))
    except (KeyError, TypeError):
        raise Irregular from None
    masks: dict[str, np.ndarray] = {}
    point_counts = points = None
    for (column, limit), values in zip(columns, by_column, strict=False):
        converted = convert_column(column, list(values), limit)
        if column.ragged:
            point_counts, points = converted
        else:
            masks[column.name] = converted
    _types_within(_rows(sizes, 2), SIZE_TYPES)
    if any(size != [height, width] for size in sizes):
        raise Irregular
    n = len(anns)
    masks["seg_height"] = np.full(n, height, np.int32)
    masks["seg_width"] = np.full(n, width, np.int32)
    converted = np.empty(0, np.int64)
    if list in set(map(type, strings)):
        strings, converted = _encoded_lists(strings, height, width)
    data, lengths, runs = _checked_strings(strings, height, width)
    assert point_counts is not None and points is not None
    return MaskColumns(masks, point_counts, points, data, lengths, segmentations, *runs, converted)


def _encoded_lists(strings: list, height: int, width: int) -> tuple[list, np.ndarray]:
    """The counts with every uncompressed RLE (list of runs) replaced by its COCO string, all
    encoded in one kernel call; and which were replaced."""
    converted = [j for j, s in enumerate(strings) if s.__class__ is list]
    lists = [strings[j] for j in converted]
    flat = list(chain.from_iterable(lists))
    _types_within(flat, INTS)
    try:
        runs = np.array(flat, np.int64)
    except OverflowError:
        raise Irregular from None
    counts = np.fromiter(map(len, lists), np.int64, len(lists))
    try:
        data, sizes = encode_strings(runs, np.cumsum(counts) - counts, counts, height, width)
    except ValueError:
        raise Irregular from None
    strings = list(strings)
    ends = np.cumsum(sizes).tolist()
    text = data.decode("ascii")
    for j, a, b in zip(converted, [0, *ends], ends, strict=False):
        strings[j] = text[a:b]
    return strings, np.array(converted, np.int64)


def _checked_strings(
    strings: list, height: int, width: int
) -> tuple[bytes, np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The COCO strings back to back, their lengths and (runs, run_offsets, run_counts), from
    one kernel parse of all of them (``rle.parse_strings``)."""
    _types_within(strings, frozenset((str,)))
    try:
        data = "".join(strings).encode("ascii")
    except UnicodeEncodeError:
        raise Irregular from None
    lengths = np.fromiter(map(len, strings), np.int64, len(strings))
    try:
        runs = parse_strings(
            np.frombuffer(data, np.uint8), np.cumsum(lengths) - lengths, lengths, height, width
        )
    except ValueError:
        raise Irregular from None
    return data, lengths, runs

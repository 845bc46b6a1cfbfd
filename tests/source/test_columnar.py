"""The whole-column fast path: equal to the value-by-value parse on every well-formed image,
and never accepting what the value-by-value parse rejects (it hands those back as Irregular,
so the error message comes from the slow path). The cross-mask rejections (checks.py) run on
whichever path's columns, so there both paths give the same message."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from sa1b_pack.codec.rle import string_to_runs
from sa1b_pack.source import checks
from sa1b_pack.source.annotation import (
    MASK_LIMITS,
    AnnotationError,
    _masks_one_by_one,
)
from sa1b_pack.source.columnar import Irregular, MaskColumns, convert_masks
from tests.source.test_annotation import CANONICAL, FULL, REDUNDANT, ZERO_START, tiny_doc

BAD_VALUES = [
    True,
    False,
    None,
    "1",
    2**63,
    -(2**63) - 1,
    2**31,
    1.5,
    1e308,
    [],
    [1, 2],
    [1, 2, 3, 4],
    [1.0, "2", 3, 4],
    [[1, 2]],
    [[1, "2"]],
    [[1, 2, 3]],
    {},
    {"size": [6, 8], "counts": CANONICAL},
    "",
    "3240?ON",
    "32 40?ON",
    "3240?Ob",
    "3240?ONé",
    [6, 8],
    [8, 6],
    [6.0, 8],
    [True, 8],
    -1,  # a negative area
    -(2**31),
    [0, 48],  # uncompressed RLE, of a 6x8 mask
    [48, -1, 1],
    [47.5, 0.5],
]


def checked(columns: MaskColumns) -> MaskColumns:
    """The columns, after the cross-mask rejections both paths go through."""
    if problem := checks.rejected(columns.masks):
        raise AnnotationError(problem)
    return columns


def fast(doc: dict) -> MaskColumns:
    image = doc["image"]
    return checked(convert_masks(doc["annotations"], MASK_LIMITS, image["height"], image["width"]))


def slow(doc: dict) -> MaskColumns:
    image = doc["image"]
    return checked(_masks_one_by_one(doc["annotations"], image["height"], image["width"]))


def kept_runs(c: MaskColumns) -> list[list[int]]:
    return [c.runs[o : o + n].tolist() for o, n in zip(c.run_offsets, c.run_counts, strict=True)]


def assert_same(a: MaskColumns, b: MaskColumns) -> None:
    assert a.masks.keys() == b.masks.keys()
    for name in a.masks:
        assert a.masks[name].dtype == b.masks[name].dtype, name
        assert a.masks[name].shape == b.masks[name].shape, name
        assert a.masks[name].tobytes() == b.masks[name].tobytes(), name
    for field in ("point_counts", "points", "counts_sizes"):
        x, y = getattr(a, field), getattr(b, field)
        assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes(), field
    assert a.counts_data == b.counts_data
    assert a.segmentations == b.segmentations
    assert a.converted.tolist() == b.converted.tolist()
    assert kept_runs(a) == kept_runs(b)
    assert a.run_counts.tolist() == [len(r) for r in kept_runs(a)]


def leaf_paths(ann: dict) -> list[tuple]:
    paths = [(key,) for key in ann if key != "segmentation"]
    paths += [("segmentation",), ("segmentation", "size"), ("segmentation", "counts")]
    paths += [("bbox", 2), ("crop_box", 0), ("point_coords", 0), ("point_coords", 0, 1)]
    paths += [("segmentation", "size", 0)]
    return paths


def put(obj, path: tuple, value) -> None:
    for key in path[:-1]:
        obj = obj[key]
    obj[path[-1]] = value


def test_equal_on_synthetic_images(tools) -> None:
    for image_id in range(1, 13):
        _, doc = tools.sample_pair(image_id, seed=image_id)
        assert_same(fast(doc), slow(doc))


@pytest.mark.parametrize(
    "counts", [[], [CANONICAL], [CANONICAL, REDUNDANT, ZERO_START, FULL], [FULL] * 7]
)
def test_equal_on_quirky_strings_and_empty_images(counts: list[str]) -> None:
    doc = tiny_doc(9, counts)
    doc["annotations"][:1] = [dict(a, bbox=[0, 1, 2, 3]) for a in doc["annotations"][:1]]
    assert_same(fast(doc), slow(doc))


def as_uncompressed(doc: dict, every: int) -> dict:
    doc = copy.deepcopy(doc)
    for ann in doc["annotations"][::every]:
        seg = ann["segmentation"]
        seg["counts"] = string_to_runs(seg["counts"], *seg["size"]).tolist()
    return doc


def test_equal_on_uncompressed_rle(tools) -> None:
    for image_id, every in ((3, 1), (4, 2), (5, 3)):
        _, doc = tools.sample_pair(image_id, seed=image_id)
        _, original = tools.sample_pair(image_id, seed=image_id)
        doc = as_uncompressed(doc, every)
        got, expected = fast(doc), slow(doc)
        assert_same(got, expected)
        assert got.converted.tolist() == list(range(0, len(doc["annotations"]), every))
        assert_same_strings(got, slow(original))
    assert_same(fast(tiny_doc(9, [])), slow(tiny_doc(9, [])))


def assert_same_strings(a: MaskColumns, b: MaskColumns) -> None:
    assert a.counts_data == b.counts_data and a.counts_sizes.tolist() == b.counts_sizes.tolist()


def outcome(doc: dict) -> str:
    """The property on one document: "rejected" by both paths, "accepted" by both with equal
    columns, or "irregular" (the fast path declines what the slow path accepts: still right)."""
    try:
        expected = slow(doc)
    except AnnotationError as exc:
        # Irregular, or the same cross-mask rejection of columns both paths agree on
        with pytest.raises((Irregular, AnnotationError)) as info:
            fast(doc)
        if info.type is AnnotationError:
            assert str(info.value) == str(exc)
        return "rejected"
    try:
        got = fast(doc)
    except Irregular:
        return "irregular"
    assert_same(got, expected)
    return "accepted"


def test_never_accepts_what_the_slow_path_rejects(tools) -> None:
    """Random single-value damage anywhere in an annotation: whenever the value-by-value parse
    rejects the image, the fast path says Irregular; when it accepts, both agree exactly."""
    _, base = tools.sample_pair(7, seed=7, n_masks=4)
    rng = np.random.default_rng(0)
    rejected = 0
    for _ in range(600):
        doc = copy.deepcopy(base)
        j = int(rng.integers(len(doc["annotations"])))
        paths = leaf_paths(doc["annotations"][j])
        path = paths[int(rng.integers(len(paths)))]
        value = copy.deepcopy(BAD_VALUES[int(rng.integers(len(BAD_VALUES)))])
        try:
            put(doc["annotations"][j], path, value)
        except (TypeError, IndexError):
            continue
        if rng.random() < 0.1:
            del doc["annotations"][j][path[0]]
        rejected += outcome(doc) == "rejected"
    assert rejected > 300  # the damage really was damage, most of the time


def test_the_new_rules_on_both_paths(tools) -> None:
    """Every annotation in turn given uncompressed RLE (its own runs, then spoiled ones), a
    negative area, another's id: the same verdict, and the same message, on both paths."""
    _, base = tools.sample_pair(7, seed=7, n_masks=4)
    seen = []
    for j, ann in enumerate(base["annotations"]):
        seg = ann["segmentation"]
        runs = string_to_runs(seg["counts"], *seg["size"]).tolist()
        spoiled = [runs[:-1], [*runs[:-1], runs[-1] + 1], [-runs[0], runs[0] + runs[1], *runs[2:]],
                   [*runs[:-1], float(runs[-1])], [*runs[:-1], True], [2**40, *runs]]  # fmt: skip
        damage = [(("segmentation", "counts"), v) for v in (runs, [0, 0, *runs], *spoiled)]
        damage += [(("area",), -1), (("area",), 0)]
        damage += [(("id",), other["id"]) for other in base["annotations"]]
        for path, value in damage:
            doc = copy.deepcopy(base)
            put(doc["annotations"][j], path, value)
            seen.append((path[-1], outcome(doc)))
    assert seen.count(("counts", "accepted")) == 2 * len(base["annotations"])
    assert seen.count(("counts", "rejected")) == 6 * len(base["annotations"])
    assert seen.count(("area", "rejected")) == seen.count(("area", "accepted"))
    assert seen.count(("id", "rejected")) == 3 * seen.count(("id", "accepted"))

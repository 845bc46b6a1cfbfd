"""The numba codec (through masks.py) against pycocotools and the pure-Python reference."""

from __future__ import annotations

import numpy as np
import pycocotools.mask as coco
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sa1b_pack.codec import rle as masks
from sa1b_pack.testing import rle_reference as rle
from tests.rle_cases import coco_rle, coco_string, edge_masks
from tests.rle_cases import masks as mask_strategy


def mask_to_runs(mask: np.ndarray) -> np.ndarray:
    """Runs of a dense mask by the slow reference (the library packs from COCO strings)."""
    return np.array(rle.mask_to_runs(mask), "<u4")


def pack_runs(runs_list: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    counts = np.array([len(r) for r in runs_list], np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    payload = np.concatenate(runs_list).astype("<u4") if runs_list else np.empty(0, "<u4")
    return payload, offsets, counts


def nearest(mask: np.ndarray, h: int, w: int) -> np.ndarray:
    """The documented sampling, applied to a full decode: (floor((y+.5)H/h), floor((x+.5)W/w))."""
    rows = np.floor((np.arange(h) + 0.5) * mask.shape[0] / h).astype(int)
    cols = np.floor((np.arange(w) + 0.5) * mask.shape[1] / w).astype(int)
    return mask[rows][:, cols]


def check_codec(mask: np.ndarray) -> None:
    h, w = mask.shape
    counts = coco_string(mask)
    runs = masks.string_to_runs(counts, h, w)
    assert runs.dtype == np.dtype("<u4")
    assert runs.tolist() == rle.string_to_runs(counts)
    assert masks.encode_strings(runs, [0], [len(runs)], h, w)[0].decode() == counts
    assert mask_to_runs(mask).tolist() == runs.tolist()
    payload, offsets, n = pack_runs([runs])
    decoded = masks.decode(payload, offsets, n, h, w)
    np.testing.assert_array_equal(decoded[0], coco.decode(coco_rle(mask)))
    assert decoded.flags.c_contiguous and decoded.dtype == np.uint8
    assert masks.area(payload, offsets, n)[0] == coco.area(coco_rle(mask))
    np.testing.assert_array_equal(
        masks.bbox(payload, offsets, n, h)[0], coco.toBbox(coco_rle(mask))
    )


@pytest.mark.parametrize("mask", edge_masks(), ids=lambda m: f"{m.shape}")
def test_codec_matches_pycocotools_on_edge_cases(mask: np.ndarray) -> None:
    check_codec(mask)


@given(mask_strategy())
@settings(max_examples=300, deadline=None)
def test_codec_matches_pycocotools(mask: np.ndarray) -> None:
    check_codec(mask)


@given(mask_strategy(max_side=30), st.integers(1, 70), st.integers(1, 70))
@settings(max_examples=300, deadline=None)
def test_resampled_decode_equals_full_decode_then_nearest(mask: np.ndarray, h: int, w: int) -> None:
    runs = mask_to_runs(mask)
    payload, offsets, n = pack_runs([runs])
    got = masks.decode(payload, offsets, n, *mask.shape, size=(h, w))
    np.testing.assert_array_equal(got[0], nearest(mask, h, w))


def test_batch_decode_many_masks_into_reused_buffer() -> None:
    rng = np.random.default_rng(1)
    dense = [(rng.random((37, 53)) < p).astype(np.uint8) for p in (0.0, 0.01, 0.5, 0.99, 1.0)]
    payload, offsets, n = pack_runs([mask_to_runs(m) for m in dense])
    out = np.full((5, 37, 53), 7, np.uint8)
    result = masks.decode(payload, offsets, n, 37, 53, out=out)
    assert result is out
    np.testing.assert_array_equal(out, np.stack(dense))
    as_bool = np.empty((5, 37, 53), bool)
    masks.decode(payload, offsets, n, 37, 53, out=as_bool)
    np.testing.assert_array_equal(as_bool, np.stack(dense).astype(bool))


def test_zero_length_runs_anywhere_decode_like_pycocotools() -> None:
    for runs in ([0, 0, 5, 1, 10], [5, 0, 3, 4, 4], [0, 16], [16, 0], [3, 0, 0, 2, 11, 0]):
        counts = rle.runs_to_string(runs)
        payload, offsets, n = pack_runs([masks.string_to_runs(counts, 4, 4)])
        expected = coco.decode({"size": [4, 4], "counts": counts.encode()})
        np.testing.assert_array_equal(masks.decode(payload, offsets, n, 4, 4)[0], expected)


@pytest.mark.parametrize(
    ("counts", "message"),
    [
        ("0p", "outside '0'..'o'"),
        ("\x00", "outside '0'..'o'"),
        ("é", "non-ASCII"),
        ("0" + chr(48 + 0x20), "continuation"),
        ("0" + chr(48 + 0x10), "negative"),
        ("0" + chr(48 + 0x20) * 13 + "0", "overflow"),
        ("", "empty"),
        ("52", "sum"),  # 5 + 2 = 7 pixels of a 4x4 mask
        ("5=", "sum"),  # 5 + 13 = 18 > 16: pycocotools would write past the buffer
    ],
)
def test_malformed_counts_raise_value_error(counts: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        masks.string_to_runs(counts, 4, 4)


def test_decode_refuses_bad_runs_before_writing() -> None:
    good = mask_to_runs(np.ones((4, 4), np.uint8))
    bad = np.array([3, 20], "<u4")  # sums past h * w
    payload, offsets, n = pack_runs([good, bad])
    out = np.full((2, 4, 4), 9, np.uint8)
    with pytest.raises(ValueError, match="mask 1"):
        masks.decode(payload, offsets, n, 4, 4, out=out)
    assert (out == 9).all()
    with pytest.raises(ValueError, match="mask 0"):  # offsets past the payload
        masks.decode(payload, np.array([30]), np.array([2]), 4, 4)


@pytest.mark.parametrize(
    "out",
    [
        np.empty((1, 4, 5), np.uint8),
        np.empty((1, 4, 4), np.float32),
        np.empty((1, 4, 8), np.uint8)[:, :, ::2],
    ],
)
def test_decode_rejects_unusable_out(out: np.ndarray) -> None:
    payload, offsets, n = pack_runs([mask_to_runs(np.ones((4, 4), np.uint8))])
    with pytest.raises(ValueError, match="out"):
        masks.decode(payload, offsets, n, 4, 4, out=out)


@given(st.data())
@settings(max_examples=60, deadline=None)
def test_iou_and_containment_equal_pycocotools(data: st.DataObject) -> None:
    h = data.draw(st.integers(1, 20))
    w = data.draw(st.integers(1, 20))
    n = data.draw(st.integers(1, 8))
    seed = data.draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    dense = [(rng.random((h, w)) < rng.random()).astype(np.uint8) for _ in range(n)]
    payload, offsets, counts = pack_runs([mask_to_runs(m) for m in dense])
    inter = masks.intersections(payload, offsets, counts)
    rles = [coco_rle(m) for m in dense]
    np.testing.assert_array_equal(masks.iou(inter), coco.iou(rles, rles, [0] * n))
    truth = np.array([[np.logical_and(a, b).sum() for b in dense] for a in dense])
    np.testing.assert_array_equal(inter, truth)
    areas = np.array([m.sum() for m in dense])
    expected = np.divide(truth, areas[:, None], out=np.zeros((n, n)), where=truth > 0)
    # [i, j] = |i ∩ j| / |i|: the fraction of i inside j
    np.testing.assert_array_equal(masks.containment(inter), expected)


@given(st.data())
@settings(max_examples=60, deadline=None)
def test_centroids_equal_dense_means(data: st.DataObject) -> None:
    h = data.draw(st.integers(1, 20))
    w = data.draw(st.integers(1, 20))
    n = data.draw(st.integers(1, 8))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    dense = [(rng.random((h, w)) < rng.random() ** 2).astype(np.uint8) for _ in range(n)]
    payload, offsets, counts = pack_runs([mask_to_runs(m) for m in dense])
    got = masks.centroids(payload, offsets, counts, h)
    for m, xy in zip(dense, got, strict=True):
        ys, xs = np.nonzero(m)
        if len(xs) == 0:
            assert np.isnan(xy).all()
        else:  # pixel (y, x) covers [x, x + 1) x [y, y + 1): its centre is index + 0.5
            np.testing.assert_allclose(xy, [xs.mean() + 0.5, ys.mean() + 0.5], rtol=1e-12)


@pytest.mark.parametrize("mask", edge_masks(), ids=lambda m: f"{m.shape}")
def test_centroids_of_edge_masks(mask: np.ndarray) -> None:
    payload, offsets, counts = pack_runs([mask_to_runs(mask)])
    got = masks.centroids(payload, offsets, counts, mask.shape[0])[0]
    ys, xs = np.nonzero(mask)
    want = [xs.mean() + 0.5, ys.mean() + 0.5] if len(xs) else [np.nan, np.nan]
    np.testing.assert_allclose(got, want, rtol=1e-12)


@pytest.mark.parametrize(("height", "width"), [(30, 45), (45, 30), (17, 17), (1, 9)])
@pytest.mark.parametrize("pad", [True, False])
def test_decode_padded_is_sam_resize_longest_side(height: int, width: int, pad: bool) -> None:
    rng = np.random.default_rng(height * width)
    dense = [(rng.random((height, width)) < 0.4).astype(np.uint8) for _ in range(3)]
    payload, offsets, counts = pack_runs([mask_to_runs(m) for m in dense])
    longest = 64
    h, w = masks.resize_longest_shape(height, width, longest)
    assert max(h, w) == longest
    out = np.full((3, longest, longest) if pad else (3, h, w), 5, np.uint8)
    masks.decode_padded(payload, offsets, counts, height, width, longest=longest, pad=pad, out=out)
    for m, mask in zip(out, dense, strict=True):
        np.testing.assert_array_equal(m[:h, :w], nearest(mask, h, w))
        assert not m[h:].any() and not m[:, w:].any()


def test_parallel_decode_equals_serial() -> None:
    rng = np.random.default_rng(7)
    dense = [(rng.random((40, 61)) < p).astype(np.uint8) for p in np.linspace(0, 1, 9)]
    payload, offsets, counts = pack_runs([mask_to_runs(m) for m in dense])
    for size in (None, (16, 16), (80, 100)):
        serial = masks.decode(payload, offsets, counts, 40, 61, size=size)
        parallel = masks.decode(payload, offsets, counts, 40, 61, size=size, parallel=True)
        np.testing.assert_array_equal(serial, parallel)


def test_parse_strings_many_at_once_and_names_the_bad_one() -> None:
    rng = np.random.default_rng(5)
    dense = [(rng.random((9, 11)) < p).astype(np.uint8) for p in (0.0, 0.3, 1.0)]
    strings = [coco_string(m).encode() for m in dense]
    data = np.frombuffer(b"".join(strings), np.uint8)
    sizes = np.array([len(x) for x in strings])
    offsets = np.cumsum(sizes) - sizes
    runs, run_offsets, run_counts = masks.parse_strings(data, offsets, sizes, 9, 11)
    decoded = masks.decode(runs, run_offsets, run_counts, 9, 11)
    np.testing.assert_array_equal(decoded, np.stack(dense))
    picked = masks.parse_strings(data, offsets[[2, 0]], sizes[[2, 0]], 9, 11)
    np.testing.assert_array_equal(masks.decode(*picked, 9, 11), np.stack(dense)[[2, 0]])
    with pytest.raises(ValueError, match=r"mask 0: .*sum"):  # right strings, wrong image size
        masks.parse_strings(data, offsets, sizes, 9, 12)
    with pytest.raises(ValueError, match="mask 1: "):  # string 1 cut short by one character
        masks.parse_strings(data, offsets[:2], sizes[:2] - np.array([0, 1]), 9, 11)
    with pytest.raises(ValueError, match=r"mask 0: .*outside the payload"):
        masks.parse_strings(data, np.array([len(data) - 1]), np.array([5]), 9, 11)


@given(st.binary(max_size=40), st.integers(1, 12), st.integers(1, 12))
@settings(max_examples=400, deadline=None)
def test_fuzz_any_bytes_parse_like_the_reference_or_raise(data: bytes, h: int, w: int) -> None:
    """Any byte string: the kernel gives the reference's runs, or both refuse it."""
    try:
        expected = rle.string_to_runs(data)
        ok = sum(expected) == h * w and len(expected) > 0
    except ValueError:
        ok = False
    if ok:
        assert masks.string_to_runs(data, h, w).tolist() == expected
        runs = masks.string_to_runs(data, h, w)
        decoded = masks.decode(runs, [0], [len(runs)], h, w)
        np.testing.assert_array_equal(decoded[0], rle.runs_to_mask(expected, h, w))
    else:
        with pytest.raises(ValueError, match="malformed RLE counts"):
            masks.string_to_runs(data, h, w)


@given(st.lists(st.integers(0, 2**32 - 1), min_size=0, max_size=12), st.integers(1, 6))
@settings(max_examples=300, deadline=None)
def test_fuzz_any_runs_decode_correctly_or_raise(runs: list[int], h: int) -> None:
    w = 5
    payload = np.array(runs, "<u4")
    out = np.full((1, h, w), 7, np.uint8)
    if runs and sum(runs) == h * w:
        masks.decode(payload, [0], [len(runs)], h, w, out=out)
        np.testing.assert_array_equal(out[0], rle.runs_to_mask(runs, h, w))
    else:
        with pytest.raises(ValueError):
            masks.decode(payload, [0], [len(runs)], h, w, out=out)
        assert (out == 7).all(), "nothing written before the error"


@given(
    st.integers(1, 40),
    st.lists(st.integers(0, 90), max_size=40).map(lambda r: r if len(r) % 3 else [0, 0, *r]),
)
@settings(max_examples=300, deadline=None)
def test_area_and_bbox_of_any_runs_equal_the_reference(height: int, runs: list[int]) -> None:
    """Run lists with zero-length runs anywhere and jumps over many columns (the packer checks
    every mask's area and box with these kernels): the slow reference's answer."""
    total = sum(runs)
    width = -(-max(total, 1) // height)
    runs = [*runs, height * width - total]
    payload, offsets, n = pack_runs([np.array(runs)])
    assert masks.area(payload, offsets, n)[0] == rle.runs_area(runs)
    assert masks.bbox(payload, offsets, n, height)[0].tolist() == rle.runs_bbox(runs, height, width)

"""The torch mask path (train/device_masks.py), run on the CPU: bit for bit the numba kernels'
decode_padded and pycocotools' decode resampled the documented way, batched over masks of
different source shapes, on the real-format fixtures, synthetic shards and edge cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycocotools import mask as coco

from sa1b_pack.codec import rle
from sa1b_pack.codec.geometry import resize_longest_shape
from sa1b_pack.read.reader import open_store
from sa1b_pack.testing import rle_reference, synth
from tests.rle_cases import edge_masks
from tests.rle_cases import masks as mask_strategy

torch = pytest.importorskip("torch", reason="the device mask path is torch code")
from sa1b_pack.train.device_masks import expand_masks, mask_frames  # noqa: E402

SIZES = (1, 2, 5, 12, 64, 256)


def flat(runs_list: list[np.ndarray]) -> tuple:
    """(runs int32, run_offsets int64) tensors: the layout the device stage transfers."""
    offsets = np.concatenate([[0], np.cumsum([len(r) for r in runs_list])]).astype(np.int64)
    runs = np.concatenate(runs_list).astype(np.int32) if runs_list else np.zeros(0, np.int32)
    return torch.from_numpy(runs), torch.from_numpy(offsets)


def expand(runs_list, shapes, size, **options) -> np.ndarray:
    runs, offsets = flat(runs_list)
    frames = mask_frames([s[0] for s in shapes], [s[1] for s in shapes], size)
    return expand_masks(runs, offsets, torch.from_numpy(frames), size, **options).numpy()


def numba_padded(runs: np.ndarray, shape: tuple[int, int], size: int) -> np.ndarray:
    one = np.zeros(1, np.int64), np.array([len(runs)], np.int64)
    return rle.decode_padded(runs.astype("<u4"), *one, *shape, longest=size, pad=True)[0]


def fits(shape: tuple[int, int], size: int) -> bool:
    """Whether SAM's resized shape is non-empty (else both paths refuse the mask)."""
    return min(resize_longest_shape(*shape, size)) >= 1


def check(dense: list[np.ndarray], size: int) -> None:
    shapes = [d.shape for d in dense]
    runs = [_mask_to_runs(d) for d in dense]
    got = expand(runs, shapes, size)
    assert got.dtype == np.bool_ and got.shape == (len(dense), size, size)
    for k, (r, shape) in enumerate(zip(runs, shapes, strict=True)):
        np.testing.assert_array_equal(got[k], numba_padded(r, shape, size), err_msg=f"{shape}")


@given(st.lists(mask_strategy(max_side=30), min_size=1, max_size=5), st.integers(1, 70))
@settings(max_examples=300, deadline=None)
def test_equal_to_numba_for_any_masks_and_size(dense: list[np.ndarray], size: int) -> None:
    if all(fits(d.shape, size) for d in dense):
        check(dense, size)
    else:  # an empty resized shape: the numba path refuses it too
        with pytest.raises(ValueError, match="empty"):
            expand([_mask_to_runs(d) for d in dense], [d.shape for d in dense], size)


@pytest.mark.parametrize("size", SIZES)
def test_edge_cases_in_one_batch(size: int) -> None:
    ring = np.ones((9, 13), np.uint8)  # touches every border, hole inside
    ring[1:-1, 1:-1] = 0
    corners = np.zeros((7, 5), np.uint8)
    corners[[0, 0, -1, -1], [0, -1, 0, -1]] = 1
    cases = [*edge_masks(), ring, corners, np.ones((1, 1), np.uint8), np.zeros((1, 1), np.uint8)]
    check([d for d in cases if fits(d.shape, size)], size)


@pytest.mark.parametrize("runs", [[0, 0, 5, 1, 10], [5, 0, 3, 4, 4], [0, 16], [16, 0],
                                  [3, 0, 0, 2, 11, 0], [0, 0, 0, 16]])  # fmt: skip
def test_zero_length_runs_like_pycocotools(runs: list[int]) -> None:
    counts = rle_reference.runs_to_string(np.array(runs, "<u4"))
    full = coco.decode({"size": [4, 4], "counts": counts.encode()})
    for size in (2, 4, 7, 16):
        got = expand([np.array(runs)], [(4, 4)], size)[0]
        rows = cols = (2 * np.arange(size) + 1) * 4 // (2 * size)
        np.testing.assert_array_equal(got, full[rows][:, cols].astype(bool))


def test_slots_leave_padding_empty_and_out_is_written() -> None:
    rng = np.random.default_rng(0)
    dense = [(rng.random((11, 17)) < 0.5).astype(np.uint8) for _ in range(3)]
    runs, offsets = flat([_mask_to_runs(d) for d in dense])
    frames = torch.from_numpy(mask_frames([11] * 3, [17] * 3, 12))
    out = torch.ones((6, 12, 12), dtype=torch.bool)
    result = expand_masks(runs, offsets, frames, 12, slots=torch.tensor([4, 0, 2]), count=6,
                          out=out)  # fmt: skip
    assert result.data_ptr() == out.data_ptr()
    for slot, d in zip((4, 0, 2), dense, strict=True):
        np.testing.assert_array_equal(out[slot].numpy(), numba_padded(_mask_to_runs(d),
                                                                      (11, 17), 12))  # fmt: skip
    assert not out[[1, 3, 5]].any()


def source_padded(doc: dict, size: int) -> np.ndarray:
    """pycocotools' decode of the source JSON, resampled the documented way and padded."""
    height, width = doc["image"]["height"], doc["image"]["width"]
    h, w = resize_longest_shape(height, width, size)
    rows = np.floor((np.arange(h) + 0.5) * height / h).astype(int)
    cols = np.floor((np.arange(w) + 0.5) * width / w).astype(int)
    out = np.zeros((len(doc["annotations"]), size, size), bool)
    for k, a in enumerate(doc["annotations"]):
        full = coco.decode({"size": a["segmentation"]["size"],
                            "counts": a["segmentation"]["counts"].encode()})  # fmt: skip
        out[k, :h, :w] = full[rows][:, cols]
    return out


@pytest.mark.parametrize("size", [7, 12, 64, 256])
def test_real_format_store_in_one_call_equals_numba_and_pycocotools(
    packed_dir: Path, source_images, size: int
) -> None:
    """Every mask of every image of the fixture store, images of different shapes batched in
    one call, against the store's numba decode and pycocotools on the source JSON."""
    store = open_store(packed_dir)
    runs_list, shapes, want, coco_want = [], [], [], []
    for s, src in zip(store, source_images, strict=True):
        data, offsets, counts = s.mask_runs()
        runs_list += [data[o : o + n] for o, n in zip(offsets, counts, strict=True)]
        shapes += [(s.height, s.width)] * len(s)
        want.append(s.masks(longest=size, pad=True).astype(bool))
        coco_want.append(source_padded(src.doc, size))
    got = expand(runs_list, shapes, size)
    np.testing.assert_array_equal(got, np.concatenate(want))
    np.testing.assert_array_equal(got, np.concatenate(coco_want))


def test_full_size_synthetic_sample() -> None:
    """A full-size synthetic SA-1B image (1500 x 2250 class, many masks) at SAM's sizes."""
    _, doc = synth.synth_sample(np.random.default_rng(5), 1, small=False, n_masks=24)
    height, width = doc["image"]["height"], doc["image"]["width"]
    runs = [rle.string_to_runs(a["segmentation"]["counts"], height, width)
            for a in doc["annotations"]]  # fmt: skip
    for size in (256, 1024):
        got = expand(runs, [(height, width)] * len(runs), size)
        for k, r in enumerate(runs):
            np.testing.assert_array_equal(got[k], numba_padded(r, (height, width), size))
    np.testing.assert_array_equal(got, source_padded(doc, 1024))


def test_bad_input_is_a_clear_error() -> None:
    runs, offsets = flat([np.array([3, 4, 5])])
    frames = torch.from_numpy(mask_frames([3], [4], 8))
    with pytest.raises(ValueError, match="not summing to 3 x 4"):
        expand_masks(runs[:2], torch.tensor([0, 2]), frames, 8)
    with pytest.raises(ValueError, match="negative"):
        expand_masks(torch.tensor([14, -2], dtype=torch.int32), torch.tensor([0, 2]), frames, 8)
    with pytest.raises(ValueError, match="int32"):
        expand_masks(runs.long(), offsets, frames, 8)
    with pytest.raises(ValueError, match="end at len"):
        expand_masks(runs, torch.tensor([0, 2]), frames, 8)
    with pytest.raises(ValueError, match="empty"):
        expand_masks(runs, offsets, torch.tensor([[3, 4, 0, 8]]), 8)
    with pytest.raises(ValueError, match="distinct"):
        expand_masks(runs, offsets, frames, 8, slots=torch.tensor([3]), count=2)


def _mask_to_runs(mask: np.ndarray) -> np.ndarray:
    """A dense mask's runs as the kernels take them (the reference codec's encoding)."""
    return np.array(rle_reference.mask_to_runs(mask), "<u4")

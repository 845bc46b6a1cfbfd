"""Image decode + SAM resize, and stores that keep pre-resized JPEGs for training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import simplejpeg

from sa1b_pack import StoreError, open_store, pack
from sa1b_pack.codec.geometry import resize_longest_shape
from sa1b_pack.codec.jpeg import decode_image, decode_resized, encode_jpeg, resize_longest
from sa1b_pack.train.recipe import Recipe, training_sample


def reference_resize(jpeg: bytes, longest: int) -> np.ndarray:
    """Full decode, then nearest sampling of pixel centres: a different road to the same picture."""
    full = simplejpeg.decode_jpeg(jpeg, colorspace="RGB")
    h, w = resize_longest_shape(full.shape[0], full.shape[1], longest)
    rows = np.floor((np.arange(h) + 0.5) * full.shape[0] / h).astype(int)
    cols = np.floor((np.arange(w) + 0.5) * full.shape[1] / w).astype(int)
    return full[rows][:, cols]


@pytest.mark.parametrize("longest", [40, 64, 100, 300])  # DCT-scaled, exact, and upscaled
def test_resize_longest_is_sams_shape_and_the_same_picture(packed_dir: Path, longest: int) -> None:
    s = open_store(packed_dir)[2]
    jpeg = bytes(s.jpeg)
    got = resize_longest(jpeg, s.height, s.width, longest)
    assert got.shape == (*resize_longest_shape(s.height, s.width, longest), 3)
    assert np.abs(got.astype(int) - reference_resize(jpeg, longest)).mean() < 12
    padded = np.full((longest, longest, 3), 5, np.uint8)
    decode_image(jpeg, s.height, s.width, longest, padded)
    h, w = got.shape[:2]
    np.testing.assert_array_equal(padded[:h, :w], got)
    assert not padded[h:].any() and not padded[:, w:].any()


def test_encode_then_decode_resized(packed_dir: Path) -> None:
    s = open_store(packed_dir)[0]
    small = resize_longest(bytes(s.jpeg), s.height, s.width, 64)
    out = np.full((64, 64, 3), 9, np.uint8)
    h, w = decode_resized(encode_jpeg(small, 90), 64, out)
    assert (h, w) == small.shape[:2]
    assert np.abs(out[:h, :w].astype(int) - small).mean() < 4  # JPEG q90
    assert not out[h:].any() and not out[:, w:].any()


@pytest.fixture(scope="module")
def resized_store(source_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dst = tmp_path_factory.mktemp("resized") / "store"
    assert pack(source_dir, dst, [0, 1], progress=False, image_longest=64).ok
    return dst


@pytest.mark.slow
def test_pre_resized_store_serves_training(resized_store: Path, packed_dir: Path) -> None:
    store, plain = open_store(resized_store), open_store(packed_dir)
    assert store.image_longest == 64 and plain.image_longest is None
    assert store.info()["image_longest"] == 64
    recipe = Recipe(image_size=64, mask_size=16, max_masks=3)
    for i in range(len(store)):
        s = store[i]
        assert plain[i].resized_jpeg is None
        h, w, _, _ = simplejpeg.decode_jpeg_header(bytes(s.resized_jpeg))
        assert (h, w) == resize_longest_shape(s.height, s.width, 64)
        ours, theirs = training_sample(store, i, recipe), training_sample(plain, i, recipe)
        assert ours["mask_ids"].tolist() == theirs["mask_ids"].tolist()
        np.testing.assert_array_equal(ours["masks"], theirs["masks"])
        np.testing.assert_array_equal(ours["boxes"], theirs["boxes"])
        diff = np.abs(ours["image"].astype(int) - theirs["image"].astype(int))
        assert diff.mean() < 4, "the pre-resized JPEG is the same picture (q90)"
        assert bytes(s.jpeg) == bytes(plain[i].jpeg), "the full JPEG is still kept"


def test_dataset_says_which_jpegs_it_uses(resized_store: Path, packed_dir: Path) -> None:
    pytest.importorskip("torch", reason="optional dependency: pip install sa1b-pack[torch]")
    from sa1b_pack.torch import SA1BDataset

    assert "pre-resized 64 px JPEGs (quality 90)" in repr(SA1BDataset(resized_store, image_size=64))
    assert "full-size JPEGs" in repr(SA1BDataset(resized_store, image_size=128))
    assert "full-size JPEGs" in repr(SA1BDataset(packed_dir, image_size=64))


def test_a_store_keeps_one_resize_setting(resized_store: Path, source_dir: Path) -> None:
    with pytest.raises(StoreError, match="image_longest=64"):
        pack(source_dir, resized_store, [2], progress=False)
    with pytest.raises(StoreError, match="image_longest=64"):
        pack(source_dir, resized_store, [2], progress=False, image_longest=128)

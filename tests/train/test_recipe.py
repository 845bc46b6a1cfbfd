"""The training recipe (numpy side): filters, sampling, transforms, against independent oracles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest
import simplejpeg
from pycocotools import mask as mask_util

from sa1b_pack import Store, open_store, pack
from sa1b_pack.train.recipe import Recipe, decode_image, eligible_images, training_sample

FILTERS = dict(min_predicted_iou=0.9, min_stability_score=0.92, min_area=60)


@pytest.fixture(scope="module")
def store(packed_dir: Path) -> Store:
    return open_store(packed_dir)


def test_filters_equal_a_pyarrow_query(store: Store, packed_dir: Path) -> None:
    recipe = Recipe(**FILTERS)
    files = sorted(str(p) for p in packed_dir.glob("parts/sa_*/annotations.parquet"))
    table = ds.dataset(files).to_table(
        filter=(ds.field("predicted_iou") >= 0.9)
        & (ds.field("stability_score") >= 0.92)
        & (ds.field("area") >= 60)
    )
    wanted = set(pc.unique(table.column("image_id")).to_pylist())
    got = [store[int(i)].image_id for i in eligible_images(store, recipe)]
    assert set(got) == wanted and len(got) == len(wanted)
    assert 0 < len(got) < len(store), "the filters must drop some images and keep some"
    for i in eligible_images(store, recipe):
        s = store[int(i)]
        sample = training_sample(store, int(i), Recipe(**FILTERS, mask_sampling="all"))
        expected = [
            int(j)
            for j, (iou, st, a) in enumerate(
                zip(s.predicted_iou, s.stability_score, s.area, strict=True)
            )
            if iou >= 0.9 and st >= 0.92 and a >= 60
        ]
        assert sample["mask_ids"].tolist() == s.mask_ids[expected].tolist()


def test_random_sampling_is_deterministic_per_seed_epoch_image(store: Store) -> None:
    recipe = Recipe(max_masks=3, seed=7)
    busy = [i for i in range(len(store)) if len(store[i]) > 6]
    assert busy
    for i in busy:
        a = training_sample(store, i, recipe, epoch=0)["mask_ids"]
        assert training_sample(store, i, recipe, epoch=0)["mask_ids"].tolist() == a.tolist()
        assert len(a) == 3 and len(set(a.tolist())) == 3
        assert set(a.tolist()) <= set(store[i].mask_ids.tolist())
    draws = {tuple(training_sample(store, busy[0], recipe, epoch=e)["mask_ids"]) for e in range(6)}
    assert len(draws) > 1, "epochs must draw different masks"
    other_seed = Recipe(max_masks=3, seed=8)
    assert any(
        training_sample(store, i, other_seed)["mask_ids"].tolist()
        != training_sample(store, i, recipe)["mask_ids"].tolist()
        for i in busy
    )


def test_largest_and_all_sampling(store: Store) -> None:
    for i in range(len(store)):
        s = store[i]
        largest = training_sample(store, i, Recipe(max_masks=4, mask_sampling="largest"))
        by_area = sorted(range(len(s)), key=lambda j: (-int(s.area[j]), j))[:4]
        assert largest["mask_ids"].tolist() == s.mask_ids[by_area].tolist()
        every = training_sample(store, i, Recipe(max_masks=1, mask_sampling="all"))
        assert every["mask_ids"].tolist() == s.mask_ids.tolist()


def test_masks_equal_pycocotools_resampled_and_padded(store: Store, source_images) -> None:
    recipe = Recipe(image_size=96, mask_size=32, max_masks=5)
    for i, src in enumerate(source_images):
        sample = training_sample(store, i, recipe)
        s = store[i]
        h, w = sample["input_size"]
        assert max(h, w) == 96
        scale = 32 / max(s.height, s.width)
        mh, mw = int(s.height * scale + 0.5), int(s.width * scale + 0.5)
        rows = np.floor((np.arange(mh) + 0.5) * s.height / mh).astype(int)
        cols = np.floor((np.arange(mw) + 0.5) * s.width / mw).astype(int)
        by_id = {a["id"]: a for a in src.doc["annotations"]}
        for k, mask_id in enumerate(sample["mask_ids"].tolist()):
            seg = by_id[mask_id]["segmentation"]
            full = mask_util.decode({"size": seg["size"], "counts": seg["counts"].encode()})
            got = sample["masks"][k]
            assert got.dtype == bool and got.shape == (32, 32)
            np.testing.assert_array_equal(got[:mh, :mw], full[rows][:, cols].astype(bool))
            assert not got[mh:].any() and not got[:, mw:].any()
        assert sample["predicted_iou"].tolist() == [
            by_id[m]["predicted_iou"] for m in sample["mask_ids"].tolist()
        ]


def test_image_resized_and_padded(store: Store) -> None:
    s = store[0]
    out = np.full((128, 128, 3), 77, np.uint8)
    decode_image(s.jpeg, s.height, s.width, 128, out)
    scale = 128 / max(s.height, s.width)
    h, w = int(s.height * scale + 0.5), int(s.width * scale + 0.5)
    assert not out[h:].any() and not out[:, w:].any()
    full = simplejpeg.decode_jpeg(bytes(s.jpeg), colorspace="RGB")
    rows = np.floor((np.arange(h) + 0.5) * s.height / h).astype(int)
    cols = np.floor((np.arange(w) + 0.5) * s.width / w).astype(int)
    nearest = full[rows][:, cols].astype(int)
    assert np.abs(out[:h, :w].astype(int) - nearest).mean() < 12  # same picture, resampled


def test_boxes_and_points_hand_computed(tmp_path: Path, tools) -> None:
    """A 300 x 200 image at image_size 150 is scaled by exactly 0.5 to 150 x 100."""
    jpeg = tools.tiny_jpeg(200, 300, seed=3)
    mask = np.zeros((200, 300), np.uint8)
    mask[20:60, 10:40] = 1
    counts = mask_util.encode(np.asfortranarray(mask))["counts"].decode()
    doc = {
        "image": {"image_id": 5, "width": 300, "height": 200, "file_name": "sa_5.jpg"},
        "annotations": [
            {
                "id": 1,
                "segmentation": {"size": [200, 300], "counts": counts},
                "area": 1200,
                "bbox": [10.0, 20.0, 30.0, 40.0],
                "predicted_iou": 0.95,
                "stability_score": 0.97,
                "point_coords": [[12.0, 34.0]],
                "crop_box": [0.0, 0.0, 300.0, 200.0],
            }
        ],
    }
    tools.write_tar(
        tmp_path / "src/sa_000000.tar", [("sa_5.jpg", jpeg), ("sa_5.json", orjson.dumps(doc))]
    )
    assert pack(tmp_path / "src", tmp_path / "dst", [0], progress=False).ok
    store = open_store(tmp_path / "dst")
    sample = training_sample(store, 0, Recipe(image_size=150, mask_size=30))
    assert sample["input_size"] == (100, 150) and sample["orig_size"] == (200, 300)
    assert sample["boxes"].tolist() == [[5.0, 10.0, 20.0, 30.0]]
    assert sample["points"].tolist() == [[[6.0, 17.0]]]  # (K, P, 2): the stored point, P = 1
    assert sample["point_labels"].tolist() == [[1]]
    assert sample["masks"].shape == (1, 30, 30)
    expected = np.zeros((30, 30), bool)
    expected[2:6, 1:4] = True  # mask rows 20..59, cols 10..39, sampled every 10 px
    np.testing.assert_array_equal(sample["masks"][0], expected)


def test_recipe_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="mask_sampling"):
        Recipe(mask_sampling="biggest")
    with pytest.raises(ValueError, match="positive"):
        Recipe(max_masks=0)

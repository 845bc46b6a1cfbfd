"""Relations of the sampled masks (Recipe(relations=True)) against pycocotools and dense numpy
on the full-resolution decode of the source strings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_util

from sa1b_pack import Store, open_store
from sa1b_pack.codec import rle
from sa1b_pack.train import relations
from sa1b_pack.train.recipe import Recipe, training_sample

RECIPE = Recipe(image_size=96, mask_size=32, max_masks=6, relations=True)


@pytest.fixture(scope="module")
def store(packed_dir: Path) -> Store:
    return open_store(packed_dir)


def source_masks(src, mask_ids) -> tuple[list[dict], np.ndarray]:
    by_id = {a["id"]: a["segmentation"] for a in src.doc["annotations"]}
    rles = [{"size": by_id[j]["size"], "counts": by_id[j]["counts"].encode()} for j in mask_ids]
    dense = np.stack([mask_util.decode(r) for r in rles]).astype(bool)
    return rles, dense


def test_relations_equal_pycocotools_and_dense_numpy(store: Store, source_images) -> None:
    checked = 0
    for i, src in enumerate(source_images):
        sample = training_sample(store, i, RECIPE)
        ids = sample["mask_ids"].tolist()
        if not ids:  # an image without masks: (0, 0) relations
            assert sample["iou"].shape == sample["containment"].shape == (0, 0)
            continue
        rles, dense = source_masks(src, ids)
        n = len(ids)
        np.testing.assert_array_equal(sample["iou"], mask_util.iou(rles, rles, [0] * n))
        flat = dense.reshape(n, -1).astype(np.int64)
        inter = flat @ flat.T
        area = flat.sum(1)
        want = np.divide(inter, area[:, None], out=np.zeros((n, n)), where=area[:, None] > 0)
        np.testing.assert_array_equal(sample["containment"], want)  # [i, j] = |i ∩ j| / |i|
        ys, xs = np.indices(dense.shape[1:])
        centroids = np.stack([[xs[m].mean() + 0.5, ys[m].mean() + 0.5] for m in dense])
        np.testing.assert_allclose(sample["orig_centroids"], centroids, rtol=1e-12)
        h, w = sample["input_size"]
        scale = np.array([w / src.doc["image"]["width"], h / src.doc["image"]["height"]])
        np.testing.assert_allclose(sample["centroids"], centroids * scale, rtol=1e-12)
        image_area = dense.shape[1] * dense.shape[2]
        levels = [0 if a < 32**2 / 640 / 480 * image_area else
                  1 if a < 96**2 / 640 / 480 * image_area else 2 for a in area]  # fmt: skip
        assert sample["scale_level"].tolist() == levels
        checked += (n > 1) and bool((inter[~np.eye(n, dtype=bool)] > 0).any())
    assert checked >= 3, "some samples must have overlapping masks"


def test_scale_levels_are_cocos_thresholds_on_a_coco_sized_image() -> None:
    area = np.array([0, 32**2 - 1, 32**2, 96**2 - 1, 96**2, 640 * 480])
    assert relations.scale_levels(area, 480, 640).tolist() == [0, 0, 1, 1, 2, 2]
    # the same fractions of a 1440 x 1920 image: 9x the pixels, 9x the thresholds
    assert relations.scale_levels(area * 9, 1440, 1920).tolist() == [0, 0, 1, 1, 2, 2]


def test_relations_are_off_by_default_and_match_the_sample_api(store: Store) -> None:
    plain = training_sample(store, 2, Recipe(max_masks=5))
    assert not {"iou", "containment", "centroids", "scale_level"} & set(plain)
    full = training_sample(store, 2, Recipe(max_masks=5, relations=True))
    s = store[2]
    chosen = [s.mask_ids.tolist().index(j) for j in full["mask_ids"].tolist()]
    np.testing.assert_array_equal(full["iou"], s.mask_iou(chosen))
    np.testing.assert_array_equal(full["containment"], s.mask_containment(chosen))
    centroids = rle.centroids(*s.mask_runs(chosen), s.height)
    np.testing.assert_array_equal(full["orig_centroids"], centroids)
    np.testing.assert_array_equal(plain["masks"], full["masks"])

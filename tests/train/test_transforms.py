"""Sample transforms: the flip against pycocotools' decode of the source strings, the resize
jitter's masks against its boxes, the contract enforced, randomness from (seed, epoch, image)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_util

from sa1b_pack import Store, open_store
from sa1b_pack.train.recipe import Recipe, training_sample
from sa1b_pack.train.transforms import Compose, HorizontalFlip, ResizeJitter, select_masks

RECIPE = Recipe(image_size=96, mask_size=48, max_masks=6, relations=True)


@pytest.fixture(scope="module")
def store(packed_dir: Path) -> Store:
    return open_store(packed_dir)


def nearest_map(source: int, size: int) -> np.ndarray:
    """The recipe's documented sampling: output pixel c reads source floor((c + .5) * N / n)."""
    return np.floor((np.arange(size) + 0.5) * source / size).astype(int)


def test_flip_equals_the_flipped_source_decode(store: Store, source_images) -> None:
    flip = HorizontalFlip(p=1.0)
    for i, src in enumerate(source_images):
        plain = training_sample(store, i, RECIPE)
        got = training_sample(store, i, RECIPE, transform=flip)
        (h, w), (mh, mw) = got["input_size"], got["mask_input_size"]
        assert (h, w) == plain["input_size"] and (mh, mw) == plain["mask_input_size"]
        np.testing.assert_array_equal(got["image"][:h, :w], plain["image"][:h, :w][:, ::-1])
        assert not got["image"][h:].any() and not got["image"][:, w:].any()
        np.testing.assert_array_equal(
            got["masks"][:, :mh, :mw], plain["masks"][:, :mh, mw - 1 :: -1]
        )
        assert not got["masks"][:, mh:].any() and not got["masks"][:, :, mw:].any()
        by_id = {a["id"]: a["segmentation"] for a in src.doc["annotations"]}
        height, width = src.doc["image"]["height"], src.doc["image"]["width"]
        rows, cols = nearest_map(height, mh), nearest_map(width, mw)
        # output column c of the flip reads flipped-source column W - 1 - cols[mw - 1 - c]:
        # the recipe's own column unless its sample point (c + .5) * W / mw lies exactly on a
        # pixel edge, which nearest sampling resolves to the right, so mirrored to the left
        mirrored = width - 1 - cols[::-1]
        ties = ((2 * np.arange(mw) + 1) * width) % (2 * mw) == 0
        np.testing.assert_array_equal(mirrored, cols - ties)
        for k, mask_id in enumerate(got["mask_ids"].tolist()):
            seg = by_id[mask_id]
            full = mask_util.decode({"size": seg["size"], "counts": seg["counts"].encode()})
            want = full[:, ::-1][rows][:, mirrored].astype(bool)
            np.testing.assert_array_equal(got["masks"][k, :mh, :mw], want)
        b = plain["boxes"]
        np.testing.assert_array_equal(got["boxes"], np.stack([w - b[:, 2], b[:, 1], w - b[:, 0],
                                                              b[:, 3]], axis=1))  # fmt: skip
        np.testing.assert_array_equal(got["points"][..., 0], w - plain["points"][..., 0])
        np.testing.assert_array_equal(got["points"][..., 1], plain["points"][..., 1])
        np.testing.assert_array_equal(got["centroids"][:, 0], w - plain["centroids"][:, 0])
        for source_fact in ("orig_centroids", "iou", "containment", "scale_level", "mask_ids"):
            np.testing.assert_array_equal(got[source_fact], plain[source_fact])


def test_flip_draws_from_seed_epoch_and_image(store: Store) -> None:
    def flipped(i: int, epoch: int = 0, seed: int = 0) -> bool:
        recipe = Recipe(image_size=64, mask_size=16, max_masks=3, seed=seed)
        a = training_sample(store, i, recipe, epoch)
        b = training_sample(store, i, recipe, epoch, transform=HorizontalFlip())
        assert a["mask_ids"].tolist() == b["mask_ids"].tolist()  # the mask draw is unchanged
        return not np.array_equal(a["boxes"], b["boxes"])

    draws = [flipped(i) for i in range(len(store))]
    assert any(draws) and not all(draws)
    assert draws == [flipped(i) for i in range(len(store))]
    assert any(flipped(3, epoch) != flipped(3) for epoch in range(1, 8))
    plain = training_sample(store, 3, RECIPE)
    same = training_sample(store, 3, RECIPE, transform=HorizontalFlip(p=0.0))
    for key, value in plain.items():
        np.testing.assert_array_equal(same[key], value)


def box_errors(sample: dict) -> np.ndarray:
    """|box of each mask - its box| per edge, in mask pixels (pixel c covers [c, c + 1))."""
    (h, w), (mh, mw) = sample["input_size"], sample["mask_input_size"]
    pixel = np.array([w / mw, h / mh, w / mw, h / mh])  # image pixels per mask pixel
    out = np.zeros((len(sample["masks"]), 4))
    for k, m in enumerate(sample["masks"]):
        ys, xs = np.nonzero(m)
        if len(xs):
            out[k] = np.abs([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
                            - sample["boxes"][k] / pixel)  # fmt: skip
    return out


@pytest.mark.parametrize("scales", [(0.5, 0.9), (1.1, 1.8), (0.4, 1.6)])
def test_resize_jitter_keeps_masks_boxes_and_sizes_consistent(store: Store, scales) -> None:
    jitter = ResizeJitter(*scales)
    seen, errors = set(), []
    for i in range(len(store)):
        for epoch in range(3):
            plain = training_sample(store, i, RECIPE, epoch)
            got = training_sample(store, i, RECIPE, epoch, transform=jitter)
            (h, w), (mh, mw) = got["input_size"], got["mask_input_size"]
            (h0, w0), (mh0, mw0) = plain["input_size"], plain["mask_input_size"]
            scale = np.random.default_rng((RECIPE.seed, epoch, i, 1)).uniform(*scales)
            seen.add(scale > 1)
            assert (h, w) == (min(96, round(h0 * scale)), min(96, round(w0 * scale)))
            assert (mh, mw) == (min(48, round(mh0 * scale)), min(48, round(mw0 * scale)))
            assert not got["image"][h:].any() and not got["image"][:, w:].any()
            assert not got["masks"][:, mh:].any() and not got["masks"][:, :, mw:].any()
            assert got["image"][:h, :w].any()
            keep = [plain["mask_ids"].tolist().index(j) for j in got["mask_ids"].tolist()]
            np.testing.assert_array_equal(got["iou"], plain["iou"][np.ix_(keep, keep)])
            np.testing.assert_array_equal(got["predicted_iou"], plain["predicted_iou"][keep])
            dropped = set(range(len(plain["masks"]))) - set(keep)
            assert all(plain["masks"][k].any() for k in dropped)  # cut off, or too thin
            error = box_errors(got)
            errors.append(error.ravel())
            uncut = (got["boxes"] < [w, h, w, h]).all(axis=1)
            if scale >= 1:  # nearest upsampling loses nothing: the recipe's error, scaled, + 1
                before = box_errors(plain)[keep]
                assert (error <= before * scale + 1 + 1e-9)[uncut].all()
            points = got["points"]
            inside = ~np.isnan(points[..., 0])
            assert (points[inside] < [w, h]).all() and (points[inside] >= 0).all()
            np.testing.assert_array_equal(got["point_labels"] == -1, ~inside)
    # overall: nearest sampling by the recipe, then by the jitter, each within about a mask
    # pixel, except where a part thinner than the sampling step vanishes when shrinking
    errors = np.concatenate(errors)
    assert errors.max() <= 3 and (errors <= 1).mean() >= 0.95, np.quantile(errors, [0.5, 0.99])
    assert seen == ({False, True} if scales[0] < 1 < scales[1] else {scales[0] > 1})


def test_transforms_compose_and_mask_transforms_come_last(store: Store) -> None:
    calls = []

    def erode(masks, valid, rng):
        calls.append((masks.shape, valid))
        out = masks.copy()
        out[:, : valid[0], : valid[1]] &= rng.random(out[:, : valid[0], : valid[1]].shape) < 0.5
        return out

    both = Compose(HorizontalFlip(p=1.0), ResizeJitter(0.5, 0.5))
    got = training_sample(store, 4, RECIPE, transform=both, mask_transform=erode)
    again = training_sample(store, 4, RECIPE, transform=both, mask_transform=erode)
    np.testing.assert_array_equal(got["masks"], again["masks"])  # rng from (seed, epoch, image)
    geometric = training_sample(store, 4, RECIPE, transform=both)
    assert calls[0] == (geometric["masks"].shape, geometric["mask_input_size"])
    assert not (got["masks"] & ~geometric["masks"]).any()
    assert got["masks"].sum() < geometric["masks"].sum()


def test_the_contract_is_enforced(store: Store) -> None:
    def smaller_image(sample, rng):
        sample["image"] = sample["image"][:50]
        return sample

    def boxes_only(sample, rng):
        sample["boxes"] = sample["boxes"][:1]
        return sample

    def extra_key(sample, rng):
        return {**sample, "depth": 1}

    cases = [(smaller_image, "keep image"), (boxes_only, "left boxes"), (extra_key, "keys")]
    for transform, message in cases:
        with pytest.raises(ValueError, match=message):
            training_sample(store, 4, RECIPE, transform=transform)
    with pytest.raises(ValueError, match="mask_transform must return"):
        training_sample(store, 4, RECIPE, mask_transform=lambda m, v, r: m[:, :10].copy())
    with pytest.raises(ValueError, match="min_scale"):
        ResizeJitter(1.2, 1.1)


def test_select_masks_keeps_every_per_mask_field_in_step(store: Store) -> None:
    plain = training_sample(store, 4, RECIPE)
    k = len(plain["masks"])
    assert k >= 3
    got = select_masks({key: v.copy() if isinstance(v, np.ndarray) else v
                        for key, v in plain.items()}, [2, 0])  # fmt: skip
    for key in ("masks", "boxes", "points", "mask_ids", "centroids", "scale_level"):
        np.testing.assert_array_equal(got[key], plain[key][[2, 0]])
    np.testing.assert_array_equal(got["containment"], plain["containment"][np.ix_([2, 0], [2, 0])])
    assert select_masks(dict(plain), np.arange(k) == 1)["mask_ids"].tolist() == [
        plain["mask_ids"][1]
    ]


def test_transforms_pickle_for_spawn_workers() -> None:
    t = Compose(HorizontalFlip(0.3), ResizeJitter(0.7, 1.2))
    clone = pickle.loads(pickle.dumps(t))
    assert clone.transforms[0].p == 0.3 and clone.transforms[1].max_scale == 1.2

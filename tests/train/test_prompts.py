"""Prompts drawn from the runs (Recipe points_per_mask, negative_points, box_noise): on their
masks (or off them) at full resolution by pycocotools' decode of the source strings, uniform
by chi-square, box noise as recipe'd, and the same batches whatever the loader, workers,
threads or resume."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import orjson
import pytest
from pycocotools import mask as mask_util

from sa1b_pack import Store, open_store
from sa1b_pack.testing import rle_reference, synth
from sa1b_pack.train.prompts import noisy_boxes, prompt_points
from sa1b_pack.train.recipe import Recipe, training_sample
from sa1b_pack.train.transforms import Compose, HorizontalFlip, ResizeJitter
from sa1b_pack.write.packer import pack
from tests.chisquare import chi2_sf

PROMPTS = dict(points_per_mask=3, negative_points=2, box_noise=0.1)
RECIPE = Recipe(image_size=96, mask_size=24, max_masks=8, **PROMPTS)


@pytest.fixture(scope="module")
def store(packed_dir: Path) -> Store:
    return open_store(packed_dir)


@pytest.fixture(scope="module")
def full_size(tmp_path_factory: pytest.TempPathFactory, tools) -> tuple[Store, list]:
    """One full-size (~1500 px) synthetic SA-1B image with 40 masks, packed, and its source."""
    src = tmp_path_factory.mktemp("full-src")
    jpeg, doc = synth.synth_sample(np.random.default_rng(7), 1, small=False, n_masks=40)
    tools.write_tar(src / "sa_000000.tar", [("sa_1.jpg", jpeg), ("sa_1.json", orjson.dumps(doc))])
    dst = tmp_path_factory.mktemp("full-store") / "store"
    assert pack(src, dst, [0], progress=False).ok
    return open_store(dst), tools.read_source(src, [0])


def pixels_of(points: np.ndarray, sample: dict) -> np.ndarray:
    """Full-resolution (x, y) pixel of each point: the inverse of (x + 0.5) * w / W."""
    (h, w), (height, width) = sample["input_size"], sample["orig_size"]
    return np.rint(points / [w / width, h / height] - 0.5).astype(np.int64)


def check_on_and_off(sample: dict, source, recipe: Recipe) -> int:
    """Every label-1 point on its mask, every label-0 point off it (and in its box): counted."""
    by_id = {a["id"]: a for a in source.doc["annotations"]}
    height, width = sample["orig_size"]
    checked = 0
    for k, mask_id in enumerate(sample["mask_ids"].tolist()):
        ann = by_id[mask_id]
        seg = ann["segmentation"]
        mask = mask_util.decode({"size": seg["size"], "counts": seg["counts"].encode()})
        labels = sample["point_labels"][k]
        xy = pixels_of(sample["points"][k][labels >= 0], sample)
        assert ((xy >= 0) & (xy < [width, height])).all()
        on = mask[xy[:, 1], xy[:, 0]].astype(bool)
        assert (on == (labels[labels >= 0] == 1)).all(), (mask_id, xy, labels)
        assert (labels[: recipe.points_per_mask] == 1).all() == (mask.sum() > 0)
        if recipe.negative_from == "box":  # pixel centres inside the source box, edges included
            x, y, bw, bh = ann["bbox"]
            centres = xy[labels[labels >= 0] == 0] + 0.5
            assert ((centres >= [x, y]) & (centres <= [x + bw, y + bh])).all()
        checked += len(xy)
    return checked


@pytest.mark.parametrize("negative_from", ["box", "image"])
def test_points_on_and_off_their_masks_at_full_resolution(store, source_images, negative_from):
    recipe = Recipe(image_size=96, mask_size=24, mask_sampling="all", points_per_mask=4,
                    negative_points=3, negative_from=negative_from)  # fmt: skip
    checked = 0
    for i, src in enumerate(source_images):
        for epoch in range(2):
            checked += check_on_and_off(training_sample(store, i, recipe, epoch), src, recipe)
    assert checked > 1000


def test_points_on_a_full_size_image(full_size):
    store, (src,) = full_size
    for negative_from in ("box", "image"):
        recipe = Recipe(max_masks=64, points_per_mask=5, negative_points=5,
                        negative_from=negative_from)  # fmt: skip
        sample = training_sample(store, 0, recipe)
        assert sample["orig_size"][0] >= 1500 and len(sample["mask_ids"]) == 40
        assert check_on_and_off(sample, src, recipe) >= 40 * 9


def test_the_stored_point_by_default_and_the_mask_draw_unchanged(store):
    for i in range(len(store)):
        plain = training_sample(store, i, Recipe(image_size=96, mask_size=24, max_masks=8))
        prompted = training_sample(store, i, RECIPE)
        assert plain["mask_ids"].tolist() == prompted["mask_ids"].tolist()
        s, (h, w) = store[i], plain["input_size"]
        chosen = [s.mask_ids.tolist().index(j) for j in plain["mask_ids"].tolist()]
        want = np.asarray(s.point_coords)[chosen, :1] * [w / s.width, h / s.height]
        np.testing.assert_array_equal(plain["points"], want)
        assert (plain["point_labels"] == 1).all() and plain["points"].shape[1:] == (1, 2)
        assert prompted["points"].shape[1:] == (5, 2)
        labels = prompted["point_labels"]  # -1: a (tiny) mask that fills its box
        assert (labels[:, :3] == 1).all() and np.isin(labels[:, 3:], [0, -1]).all()


def test_chi2_helper_against_closed_forms():
    for x in (0.5, 3.0, 12.0):  # df 2: exp(-x / 2); df 4: (1 + x / 2) exp(-x / 2)
        assert chi2_sf(x, 2) == pytest.approx(math.exp(-x / 2), rel=1e-9)
        assert chi2_sf(x, 4) == pytest.approx((1 + x / 2) * math.exp(-x / 2), rel=1e-9)
    assert chi2_sf(149.449, 100) == pytest.approx(0.001, rel=1e-3)  # the tables' critical values
    assert chi2_sf(18.307, 10) == pytest.approx(0.05, rel=1e-3)


def region_mask() -> np.ndarray:
    """A 40 x 30 mask of scattered parts: runs across column ends, one-pixel runs, a block."""
    mask = np.zeros((40, 30), np.uint8)
    mask[35:, 2:9] = 1  # with the next line, runs from a column's bottom to the next one's top
    mask[:3, 3:10] = 1
    mask[10:20, 15:18] = 1
    mask[5, 25] = mask[39, 29] = mask[0, 0] = 1
    return mask


def counts_of(pos: np.ndarray, size: int) -> np.ndarray:
    return np.bincount(pos[pos >= 0].ravel(), minlength=size)


def test_foreground_and_negative_draws_are_uniform_over_pixels():
    mask = region_mask()
    height, width = mask.shape
    runs = _mask_to_runs(mask)
    args = (runs, np.array([0]), np.array([len(runs)]), height, width)
    bbox = np.array([[2.0, 1.0, 20.0, 30.0]])  # a box cutting through the mask
    flat = mask.T.ravel().astype(bool)
    in_box = np.zeros_like(mask, bool)
    in_box[1:31, 2:22] = True
    for recipe, where in (
        (Recipe(points_per_mask=40_000), flat),
        (Recipe(negative_points=40_000, negative_from="image"), ~flat),
        (Recipe(negative_points=40_000, negative_from="box"), in_box.T.ravel() & ~flat),
    ):
        rng = np.random.default_rng(11)
        points, labels = prompt_points(*args, bbox, np.full((1, 2), np.nan), recipe, rng, (1, 1))
        drawn = labels[0] >= 0
        assert drawn.sum() == 40_000
        x, y = (points[0, drawn] - 0.5).astype(np.int64).T
        hits = counts_of(x * height + y, height * width)
        assert not hits[~where].any()  # nothing outside the region
        expected = drawn.sum() / where.sum()
        stat = float(((hits[where] - expected) ** 2 / expected).sum())
        assert chi2_sf(stat, int(where.sum()) - 1) > 1e-3, (recipe, stat)


def test_the_uniformity_check_catches_a_run_biased_draw():
    """The same statistic on a draw that picks a run first (not a pixel) fails it."""
    mask = region_mask()
    runs = _mask_to_runs(mask).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(runs)[:-1]])
    fg = np.arange(1, len(runs), 2)
    fg = fg[runs[fg] > 0]
    rng = np.random.default_rng(11)
    pick = rng.choice(fg, 40_000)
    pos = starts[pick] + (rng.random(40_000) * runs[pick]).astype(np.int64)
    where = mask.T.ravel().astype(bool)
    hits = counts_of(pos, mask.size)[where]
    expected = 40_000 / where.sum()
    assert chi2_sf(float(((hits - expected) ** 2 / expected).sum()), int(where.sum()) - 1) < 1e-3


def test_box_noise_std_and_cap():
    n, rng = 20_000, np.random.default_rng(5)
    small = np.tile([400.0, 400.0, 420.0, 440.0], (n, 1))  # sides 20 x 40: std 2 and 4
    moved = noisy_boxes(small, 0.1, 20.0, rng, (1024, 1024)) - small
    np.testing.assert_allclose(moved.std(axis=0), [2, 4, 2, 4], rtol=0.03)
    assert (np.abs(moved.mean(axis=0)) < 4 * np.array([2, 4, 2, 4]) / math.sqrt(n)).all()
    large = np.tile([300.0, 300.0, 800.0, 800.0], (n, 1))  # side 500: std 50, capped at 20
    moved = noisy_boxes(large, 0.1, 20.0, rng, (1024, 1024)) - large
    assert np.abs(moved).max() == 20.0
    at_cap = (np.abs(moved) == 20.0).mean()  # P(|N(0, 50)| >= 20) = erfc(0.4 / sqrt 2)
    assert at_cap == pytest.approx(math.erfc(0.4 / math.sqrt(2)), abs=0.01)


def test_noisy_boxes_in_samples_stay_ordered_inside_and_capped(store):
    exact = Recipe(image_size=96, mask_size=24, max_masks=8)
    noisy = Recipe(image_size=96, mask_size=24, max_masks=8, box_noise=0.3, box_noise_max=3.0)
    moved = 0
    for i in range(len(store)):
        a, b = training_sample(store, i, exact), training_sample(store, i, noisy)
        h, w = b["input_size"]
        boxes = b["boxes"]
        assert (boxes[:, :2] <= boxes[:, 2:]).all() and (boxes >= 0).all()
        assert (boxes[:, 0::2] <= w).all() and (boxes[:, 1::2] <= h).all()
        assert np.abs(boxes - a["boxes"]).max(initial=0) <= 3.0 + 1e-9
        moved += (boxes != a["boxes"]).sum()
    assert moved > 0


def test_transforms_move_the_drawn_points(store):
    for i in range(len(store)):
        plain = training_sample(store, i, RECIPE)
        flipped = training_sample(store, i, RECIPE, transform=HorizontalFlip(p=1.0))
        w = plain["input_size"][1]
        np.testing.assert_array_equal(flipped["points"][..., 0], w - plain["points"][..., 0])
        np.testing.assert_array_equal(flipped["points"][..., 1], plain["points"][..., 1])
        np.testing.assert_array_equal(flipped["point_labels"], plain["point_labels"])
        grown = training_sample(store, i, RECIPE, transform=ResizeJitter(1.6, 1.6))
        keep = [plain["mask_ids"].tolist().index(j) for j in grown["mask_ids"].tolist()]
        h2, w2 = grown["input_size"]
        out = np.isnan(grown["points"][..., 0])
        assert (grown["point_labels"][out] == -1).all()
        assert (grown["point_labels"][~out] == plain["point_labels"][keep][~out]).all()
        assert (grown["points"][~out] < [w2, h2]).all()


def test_no_point_where_there_is_none():
    full = np.ones((6, 5), np.uint8)
    empty = np.zeros((6, 5), np.uint8)
    runs = [_mask_to_runs(m) for m in (full, empty)]
    offsets, counts = np.array([0, len(runs[0])]), np.array([len(r) for r in runs])
    bbox = np.array([[0.0, 0.0, 5.0, 6.0], [1.0, 1.0, 0.0, 0.0]])
    for negative_from in ("box", "image"):
        recipe = Recipe(points_per_mask=2, negative_points=2, negative_from=negative_from)
        points, labels = prompt_points(np.concatenate(runs), offsets, counts, 6, 5, bbox,
                                       np.zeros((2, 2)), recipe, np.random.default_rng(0),
                                       (1.0, 1.0))  # fmt: skip
        assert labels[0].tolist() == [1, 1, -1, -1]  # full: no pixel outside it anywhere
        assert labels[1, :2].tolist() == [-1, -1]  # empty: nothing to draw from
        assert labels[1, 2:].tolist() == ([-1, -1] if negative_from == "box" else [0, 0])
        assert np.isnan(points[labels == -1]).all() and not np.isnan(points[labels >= 0]).any()


def test_recipe_rejects_bad_prompt_fields():
    for bad in ({"negative_from": "mask"}, {"points_per_mask": -1}, {"box_noise": -0.1},
                {"negative_points": -2}, {"box_noise_max": -1.0}):  # fmt: skip
        with pytest.raises(ValueError, match=r"negative_from|must be >= 0"):
            Recipe(**bad)
    assert Recipe(points_per_mask=3, negative_points=2).point_count == 5
    assert Recipe().point_count == 1 and Recipe(negative_points=1).point_count == 2


AUGMENT = Compose(HorizontalFlip(), ResizeJitter(0.6, 1.5))


@pytest.fixture(scope="module")
def prompted(packed_dir: Path):
    torch_api = pytest.importorskip("sa1b_pack.torch", reason="the loaders need torch")
    return torch_api.SA1BDataset(packed_dir, image_size=48, mask_size=12, max_masks=4,
                                 transform=AUGMENT, **PROMPTS)  # fmt: skip


def test_same_batches_whatever_the_loader_workers_threads_and_resume(prompted):
    import torch
    from torch.utils.data import DataLoader

    from sa1b_pack.torch import SA1BLoader, SA1BSampler, collate

    def sampler(state: dict | None = None) -> SA1BSampler:
        s = SA1BSampler(prompted, 1, 0, seed=3)
        s.set_epoch(1)
        if state is not None:
            s.load_state_dict(state)
        return s

    def copies(loader) -> list[dict]:
        return [{k: v.clone() for k, v in b.items()} for b in loader]

    want = copies(DataLoader(prompted, 4, sampler=sampler(), collate_fn=collate))
    assert want[0]["points"].shape[2:] == (5, 2) and want[0]["point_labels"].shape[2] == 5
    for b in want:  # padded masks carry no points: label -1
        assert (b["point_labels"][~b["mask_valid"]] == -1).all()
        assert (b["point_labels"][b["mask_valid"]][:, :3] != 0).all()
    runs = {
        f"DataLoader, {w} workers": DataLoader(
            prompted, 4, sampler=sampler(), num_workers=w, collate_fn=collate
        )
        for w in (1, 2)
    }
    runs |= {f"SA1BLoader, {t} threads": SA1BLoader(prompted, 4, threads=t, sampler=sampler(),
                                                     copy=True) for t in (1, 2)}  # fmt: skip
    first = SA1BLoader(prompted, 4, threads=2, sampler=sampler(), copy=True)
    batches = iter(first)
    head = [next(batches) for _ in range(2)]
    state = first.state_dict()
    batches.close()
    resumed = head + copies(SA1BLoader(prompted, 4, threads=2, sampler=sampler(state)))
    for name, got in [*((n, copies(lo)) for n, lo in runs.items()), ("resumed", resumed)]:
        assert len(got) == len(want), name
        for a, b in zip(got, want, strict=True):
            assert set(a) == set(b), name
            for key in a:
                torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, equal_nan=True,
                                           msg=f"{name}: {key}")  # fmt: skip


def _mask_to_runs(mask: np.ndarray) -> np.ndarray:
    """A dense mask's runs as the kernels take them (the reference codec's encoding)."""
    return np.array(rle_reference.mask_to_runs(mask), "<u4")

"""The PyTorch adapter: shapes, collate, workers under fork and spawn, ranks, epochs."""

from __future__ import annotations

import gc
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="optional dependency: pip install sa1b-pack[torch]")

import torch
from torch.utils.data import DataLoader, DistributedSampler

from sa1b_pack.torch import Recipe, SA1BDataset, collate
from sa1b_pack.train import torch as sa1b_torch
from sa1b_pack.train.transforms import Compose, HorizontalFlip, ResizeJitter

RECIPE = dict(image_size=64, mask_size=16, max_masks=4, min_predicted_iou=0.85)


@pytest.fixture(scope="module")
def dataset(packed_dir: Path) -> SA1BDataset:
    return SA1BDataset(packed_dir, **RECIPE, seed=3)


def test_item_shapes_and_types(dataset: SA1BDataset) -> None:
    item = dataset[0]
    assert item["image"].shape == (3, 64, 64) and item["image"].dtype == torch.uint8
    k = len(item["masks"])
    assert 1 <= k <= 4
    assert item["masks"].shape == (k, 16, 16) and item["masks"].dtype == torch.bool
    assert item["boxes"].shape == (k, 4) and item["points"].shape == (k, 1, 2)
    assert item["point_labels"].shape == (k, 1) and item["point_labels"].dtype == torch.int64
    assert item["predicted_iou"].shape == (k,) and (item["predicted_iou"] >= 0.85).all()
    assert item["orig_size"].tolist() == [dataset.store[int(dataset.index[0])].height,
                                          dataset.store[int(dataset.index[0])].width]  # fmt: skip
    floats = SA1BDataset(dataset.url, **RECIPE, float_image=True)[0]["image"]
    assert floats.dtype == torch.float32 and 0 <= floats.min() and floats.max() <= 1
    torch.testing.assert_close(floats, item["image"].float() / 255)
    with pytest.raises(IndexError):
        dataset[len(dataset)]


def test_collate_pads_to_the_largest_k(dataset: SA1BDataset) -> None:
    varied = SA1BDataset(dataset.url, **{**RECIPE, "max_masks": 12})
    items = [varied[i] for i in range(len(varied))]
    counts = [len(x["masks"]) for x in items]
    assert len(set(counts)) > 1, "need samples with different mask counts"
    batch = collate(items)
    k = max(counts)
    assert batch["image"].shape == (len(items), 3, 64, 64)
    assert batch["masks"].shape == (len(items), k, 16, 16)
    assert batch["mask_valid"].sum(1).tolist() == counts
    for b, x in enumerate(items):
        n = counts[b]
        assert torch.equal(batch["masks"][b, :n], x["masks"]) and not batch["masks"][b, n:].any()
        assert torch.equal(batch["boxes"][b, :n], x["boxes"]) and not batch["boxes"][b, n:].any()
        labels = batch["point_labels"][b]
        assert torch.equal(labels[:n], x["point_labels"]) and (labels[n:] == -1).all()
    assert batch["image_id"].tolist() == [x["image_id"] for x in items]


def loader_ids(ds: SA1BDataset, workers: int, context: str | None) -> list[tuple]:
    loader = DataLoader(
        ds,
        batch_size=3,
        num_workers=workers,
        collate_fn=collate,
        multiprocessing_context=context if workers else None,
    )
    out = []
    for batch in loader:
        for b in range(len(batch["image_id"])):
            valid = batch["mask_valid"][b]
            out.append(
                (
                    int(batch["image_id"][b]),
                    tuple(batch["mask_ids"][b][valid].tolist()),
                    int(batch["masks"][b].sum()),
                    int(batch["image"][b].sum()),
                )
            )
    return out


@pytest.mark.parametrize(
    ("workers", "context"),
    [(1, "fork"), (2, "fork"), pytest.param(2, "spawn", marks=pytest.mark.slow)],
)
def test_workers_give_the_same_samples(dataset: SA1BDataset, workers: int, context: str) -> None:
    assert loader_ids(dataset, workers, context) == loader_ids(dataset, 0, None)


def test_epochs_redraw_and_reproduce(packed_dir: Path) -> None:
    ds = SA1BDataset(packed_dir, **{**RECIPE, "max_masks": 2}, seed=1)
    first = loader_ids(ds, 0, None)
    ds.set_epoch(1)
    second = loader_ids(ds, 2, "fork")
    assert [x[0] for x in first] == [x[0] for x in second]
    assert first != second
    ds.set_epoch(0)
    assert loader_ids(ds, 0, None) == first


def test_distributed_ranks_are_disjoint_and_cover(dataset: SA1BDataset) -> None:
    seen = []
    for rank in range(3):
        sampler = DistributedSampler(dataset, num_replicas=3, rank=rank, shuffle=True, seed=0)
        sampler.set_epoch(0)
        seen.append(set(sampler))
    assert all(not (a & b) for i, a in enumerate(seen) for b in seen[i + 1 :])
    assert set().union(*seen) == set(range(len(dataset)))


def test_pickle_carries_no_store_and_spills_large_indices(
    dataset: SA1BDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    blob = pickle.dumps(dataset)
    assert len(blob) < 4096
    clone = pickle.loads(blob)
    assert np.array_equal(clone.index, dataset.index) and clone.recipe == dataset.recipe
    monkeypatch.setattr(sa1b_torch, "SPILL_ABOVE", 0)
    spilled = pickle.loads(pickle.dumps(dataset))
    assert isinstance(spilled.index, np.memmap)
    assert np.array_equal(spilled.index, dataset.index)
    assert spilled[1]["image_id"] == dataset[1]["image_id"]


def test_recipe_and_keyword_overrides(packed_dir: Path) -> None:
    by_fields = SA1BDataset(packed_dir, **RECIPE, seed=3)
    assert by_fields.recipe == Recipe(**RECIPE, seed=3)
    base = Recipe(**RECIPE)
    assert SA1BDataset(packed_dir, base).recipe == base
    overridden = SA1BDataset(packed_dir, base, max_masks=2, seed=3, float_image=True)
    assert overridden.recipe == Recipe(**{**RECIPE, "max_masks": 2}, seed=3)
    assert overridden.float_image and base.max_masks == 4  # the Recipe given is not changed
    assert np.array_equal(by_fields.index, SA1BDataset(packed_dir, base).index)
    with pytest.raises(TypeError, match=r"unknown keyword\(s\) image_sise, maxmasks; Recipe"):
        SA1BDataset(packed_dir, image_sise=64, maxmasks=3)
    with pytest.raises(TypeError, match="recipe must be a Recipe, got int"):
        SA1BDataset(packed_dir, 64)
    with pytest.raises(ValueError, match="mask_sampling must be one of"):
        SA1BDataset(packed_dir, mask_sampling="best")


def spill_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("sa1b_index_*.npy"))


@pytest.fixture
def spill_everything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Spill every index, into a folder of its own: the folder holds exactly our spills."""
    monkeypatch.setattr(sa1b_torch, "SPILL_ABOVE", 0)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def test_one_spill_file_per_dataset_removed_with_it(
    packed_dir: Path, spill_everything: Path
) -> None:
    ds = SA1BDataset(packed_dir, **RECIPE, index_cache=False)  # not persisted: spilled
    copies = [pickle.loads(pickle.dumps(ds)) for _ in range(20)]
    assert len(spill_files(spill_everything)) == 1
    assert all(np.array_equal(c.index, ds.index) for c in copies)
    again = pickle.loads(pickle.dumps(copies[0]))  # a copy pickled again maps the same file
    assert np.array_equal(again.index, ds.index) and len(spill_files(spill_everything)) == 1
    del copies, again
    gc.collect()
    assert len(spill_files(spill_everything)) == 1  # the copies only mapped it
    ds.index = ds.index[:3]  # a new index: a new file, the old one removed
    assert len(pickle.loads(pickle.dumps(ds)).index) == 3
    assert len(spill_files(spill_everything)) == 1
    del ds
    gc.collect()
    assert spill_files(spill_everything) == []


@pytest.mark.slow
def test_spilled_index_under_spawn_workers(packed_dir: Path, spill_everything: Path) -> None:
    ds = SA1BDataset(packed_dir, **RECIPE, seed=3, index_cache=False)
    expected = loader_ids(ds, 0, None)
    for epoch in range(2):  # spawn pickles the dataset for each worker of each epoch
        ds.set_epoch(epoch)
        assert loader_ids(ds, 2, "spawn") == loader_ids(ds, 0, None)
    assert loader_ids(ds, 0, None) != expected  # epoch 1 drew other masks: the test can tell
    assert len(spill_files(spill_everything)) == 1
    del ds
    gc.collect()
    assert spill_files(spill_everything) == []


def test_only_the_adapter_imports_torch() -> None:
    code = (
        "import sys, sa1b_pack, sa1b_pack.cli, sa1b_pack.train.recipe, sa1b_pack.testing.synth, "
        "sa1b_pack.write.packer, sa1b_pack.read.reader; print('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr


def test_relations_and_transforms_in_items(packed_dir: Path) -> None:
    ds = SA1BDataset(packed_dir, **RECIPE, relations=True,
                     transform=Compose(HorizontalFlip(), ResizeJitter(0.5, 1.5)))  # fmt: skip
    item = ds[0]
    k = len(item["masks"])
    assert item["iou"].shape == item["containment"].shape == (k, k)
    assert item["iou"].dtype == item["centroids"].dtype == torch.float32
    assert item["centroids"].shape == item["orig_centroids"].shape == (k, 2)
    assert item["scale_level"].dtype == torch.int64 and item["scale_level"].shape == (k,)
    assert (item["mask_input_size"] <= 16).all() and (item["input_size"] <= 64).all()
    assert "iou" not in SA1BDataset(packed_dir, **RECIPE)[0]
    clone = pickle.loads(pickle.dumps(ds))  # what spawn workers get: transforms included
    for i in range(len(ds)):
        a, b = ds[i], clone[i]
        for key in a:
            if key != "image_id":
                torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, equal_nan=True)

"""The persisted eligible-image index (train/index.py): equal to a fresh build bit for bit,
found again only for the same store contents, filters and subset, never used damaged."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from sa1b_pack import open_store, pack
from sa1b_pack.read.reader import Store
from sa1b_pack.testing.synth import synth_shards
from sa1b_pack.train import index as index_module
from sa1b_pack.train.index import eligible_index, index_key
from sa1b_pack.train.recipe import Recipe, eligible_images
from sa1b_pack.write.attach import attach

RECIPES = [
    Recipe(),
    Recipe(min_predicted_iou=0.85),
    Recipe(min_stability_score=0.95, min_area=200),
    Recipe(min_predicted_iou=0.9, min_stability_score=0.9, min_area=50),
    Recipe(min_area=10**9),  # no image passes: an empty index
]


def fresh(store: Store, recipe: Recipe, ids=None) -> np.ndarray:
    index = eligible_images(store, recipe)
    return index if ids is None else np.intersect1d(index, store.subset(ids))


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return (
        a.dtype == b.dtype == np.dtype("<i8") and a.shape == b.shape and a.tobytes() == b.tobytes()
    )


@pytest.fixture
def no_build(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts builds: a load from the persisted file builds nothing."""
    builds = []
    real = index_module.eligible_images

    def counted(store, recipe):
        builds.append(1)
        return real(store, recipe)

    monkeypatch.setattr(index_module, "eligible_images", counted)
    return builds


@pytest.fixture
def store_copy(packed_dir: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "store"
    shutil.copytree(packed_dir, dst, ignore=shutil.ignore_patterns("index"))
    return dst


@pytest.mark.parametrize("recipe", RECIPES, ids=range(len(RECIPES)))
def test_persisted_equals_a_fresh_build(store_copy: Path, recipe: Recipe, no_build) -> None:
    store = open_store(store_copy)
    built, path = eligible_index(store, recipe)
    assert path is not None and path.parent == store_copy / "index" and no_build == [1]
    loaded, again = eligible_index(open_store(store_copy), recipe)
    assert again == path and no_build == [1] and isinstance(loaded, np.memmap)
    assert same_bits(np.asarray(loaded), fresh(store, recipe)) and same_bits(built, loaded)
    ids = [store[i].image_id for i in range(0, len(store), 3)]
    subset, _ = eligible_index(store, recipe, ids)
    assert same_bits(subset, fresh(store, recipe, ids))
    subset_again, _ = eligible_index(store, recipe, [f"sa_{i}.jpg" for i in ids])  # same set
    assert no_build == [1, 1]
    assert same_bits(np.asarray(subset_again), fresh(store, recipe, ids))


def test_one_file_per_filters_and_subset(store_copy: Path) -> None:
    store = open_store(store_copy)
    key = index_key(store, Recipe(min_predicted_iou=0.88), None)
    assert key == index_key(store, Recipe(min_predicted_iou=0.88, image_size=64, seed=9), None)
    assert key != index_key(store, Recipe(min_predicted_iou=0.8800000000000001), None)
    assert key != index_key(store, Recipe(min_predicted_iou=0.88), np.array([1, 2]))
    paths = {eligible_index(store, r)[1] for r in RECIPES}
    assert len(paths) == len(RECIPES) and all(p.parent == store_copy / "index" for p in paths)


def test_a_new_or_repacked_shard_is_another_store(tmp_path: Path, no_build) -> None:
    recipe = Recipe(min_predicted_iou=0.85)
    synth_shards(tmp_path / "a", [0, 1, 2], 4, small=True, seed=1, progress=False)
    synth_shards(tmp_path / "b", [0], 4, small=True, seed=2, progress=False)
    dst = tmp_path / "store"
    assert pack(tmp_path / "a", dst, [0, 1], progress=False).ok
    first = eligible_index(open_store(dst), recipe)[1]
    assert pack(tmp_path / "a", dst, [2], progress=False).ok  # a new shard
    store = open_store(dst)
    index, second = eligible_index(store, recipe)
    assert second != first and no_build == [1, 1] and same_bits(index, fresh(store, recipe))
    assert pack(tmp_path / "b", dst, [0], progress=False, repack=True).packed == ["sa_000000"]
    store = open_store(dst)  # shard 0 re-packed from another tar: same names, other contents
    index, third = eligible_index(store, recipe)
    assert third not in (first, second) and no_build == [1, 1, 1]
    assert same_bits(np.asarray(index), fresh(store, recipe))
    assert first.exists() and second.exists()  # old files stay (a job may map them), unused


def test_an_attach_keeps_the_index(store_copy: Path, no_build) -> None:
    recipe = Recipe(min_stability_score=0.9)
    _, path = eligible_index(open_store(store_copy), recipe)
    attach(store_copy, "teacher", lambda s: np.full(3, s.image_id, np.float32), progress=False)
    store = open_store(store_copy)
    index, again = eligible_index(store, recipe)
    assert again == path and no_build == [1] and same_bits(np.asarray(index), fresh(store, recipe))


@pytest.mark.parametrize("damage", ["truncated", "flipped", "garbage"])
def test_a_damaged_file_is_rebuilt_never_used(store_copy: Path, damage: str, no_build) -> None:
    recipe = Recipe(min_predicted_iou=0.85)
    store = open_store(store_copy)
    _, path = eligible_index(store, recipe)
    data = bytearray(path.read_bytes())
    if damage == "truncated":
        data = data[:-8]
    elif damage == "flipped":
        data[-3] ^= 0x10  # one bit of the last index: still a valid .npy
    else:
        data = bytearray(b"not an npy file at all")
    path.write_bytes(bytes(data))
    index, again = eligible_index(open_store(store_copy), recipe)
    assert no_build == [1, 1] and same_bits(np.asarray(index), fresh(store, recipe))
    assert again == path and path.read_bytes() != bytes(data)  # rewritten whole


def test_a_store_that_cannot_hold_it_uses_the_cache_folder(
    store_copy: Path, user_index_cache: Path, no_build
) -> None:
    (store_copy / "index").write_text("a file where the folder would go")  # not writable there
    recipe = Recipe(min_area=100)
    _, path = eligible_index(open_store(store_copy), recipe)
    assert path is not None and path.parent == user_index_cache
    index, again = eligible_index(open_store(store_copy), recipe)
    assert again == path and no_build == [1]
    assert same_bits(np.asarray(index), fresh(open_store(store_copy), recipe))
    assert eligible_index(open_store(store_copy), recipe, where=False)[1] is None
    assert no_build == [1, 1]


def test_object_storage_keeps_it_in_the_part_cache(
    source_dir: Path, tmp_path: Path, no_build
) -> None:
    import fsspec

    url = "memory://index-test/store"
    try:
        assert pack(source_dir, url, [0, 1], progress=False).ok
        cached = {"cache_dir": tmp_path / "cache", "cache_bytes": 10**9}
        recipe = Recipe(min_predicted_iou=0.85)
        _, path = eligible_index(open_store(url, **cached), recipe)
        assert path is not None and path.parent == tmp_path / "cache" / "index"
        again, path_again = eligible_index(open_store(url, **cached), recipe)
        assert path_again == path and no_build == [1]
        assert same_bits(np.asarray(again), fresh(open_store(url), recipe))
    finally:
        fsspec.filesystem("memory").rm("/index-test", recursive=True)


def test_building_it_through_a_part_cache_downloads_no_part(
    source_dir: Path, tmp_path: Path
) -> None:
    """The index reads three columns of every part: by byte range, so a node's first start
    does not fetch the whole store into its cache; a part already cached is read there."""
    import fsspec

    url = "memory://index-ranged/store"
    try:
        for dst in (url, tmp_path / "local"):
            assert pack(source_dir, dst, [0, 1], progress=False).ok
        store = open_store(url, cache_dir=tmp_path / "cache", cache_bytes=10**9)
        recipe = Recipe(min_predicted_iou=0.85, min_area=100)
        built = eligible_images(store, recipe)
        assert store.storage.cache.stats.downloads == 0 and store.storage.stats.requests > 0
        assert same_bits(built, fresh(open_store(tmp_path / "local"), recipe))  # mapped parts
        store[0].image()  # its part is downloaded, whole, for the sample
        assert store.storage.cache.stats.downloads == 1
        requests = store.storage.stats.requests
        eligible_images(store, recipe)
        assert store.storage.cache.stats.downloads == 1  # the cached part: read from disk,
        assert store.storage.stats.requests > requests  # the other by range again
    finally:
        fsspec.filesystem("memory").rm("/index-ranged", recursive=True)


def test_the_dataset_maps_and_pickles_the_persisted_file(store_copy: Path) -> None:
    torch = pytest.importorskip("torch", reason="SA1BDataset needs torch")
    import gc
    import pickle

    from sa1b_pack.torch import SA1BDataset
    from sa1b_pack.train import torch as sa1b_torch

    recipe = dict(image_size=32, mask_size=8, max_masks=2, min_predicted_iou=0.85)
    ds = SA1BDataset(store_copy, **recipe)
    built = SA1BDataset(store_copy, **recipe, index_cache=False)
    assert same_bits(np.asarray(ds.index), built.index)
    (path,) = (store_copy / "index").glob("*.npy")
    sa1b_torch.SPILL_ABOVE, spill_above = 0, sa1b_torch.SPILL_ABOVE
    try:
        state = ds.__getstate__()
        assert state["index_file"] == str(path)  # the persisted file, no temp spill
        clone = pickle.loads(pickle.dumps(ds))
    finally:
        sa1b_torch.SPILL_ABOVE = spill_above
    assert isinstance(clone.index, np.memmap) and same_bits(np.asarray(clone.index), built.index)
    assert torch.equal(clone[1]["masks"], ds[1]["masks"])
    del ds, clone
    gc.collect()
    assert path.exists()  # the persisted file outlives the datasets that mapped it

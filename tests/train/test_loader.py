"""SA1BLoader: the same batches as DataLoader + collate for any thread count, buffers reused
only outside the documented window, clean shutdown, errors that name the sample."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="optional dependency: pip install sa1b-pack[torch]")

import torch
from torch.utils.data import DataLoader

from sa1b_pack.errors import StoreError
from sa1b_pack.torch import SA1BDataset, SA1BLoader, SA1BSampler, SampleError, collate
from sa1b_pack.train import threaded
from sa1b_pack.train.transforms import Compose, HorizontalFlip, ResizeJitter

RECIPE = dict(image_size=48, mask_size=12, max_masks=4, mask_sampling="random")
KEYS = ("image", "masks", "mask_valid", "boxes", "points", "predicted_iou", "stability_score",
        "mask_ids", "image_id", "orig_size", "input_size", "mask_input_size")  # fmt: skip
RELATIONS = ("iou", "containment", "centroids", "orig_centroids", "scale_level")


@pytest.fixture(scope="module")
def dataset(packed_dir: Path) -> SA1BDataset:
    return SA1BDataset(packed_dir, **RECIPE)


def reference(ds, seed: int = 0, epoch: int = 0, batch_size: int = 3) -> list[dict]:
    sampler = SA1BSampler(ds, 1, 0, seed=seed)
    sampler.set_epoch(epoch)
    return list(DataLoader(ds, batch_size=batch_size, sampler=sampler, collate_fn=collate))


def assert_same(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for key in set(KEYS) | set(a):
        assert a[key].shape == b[key].shape and a[key].dtype == b[key].dtype, key
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, equal_nan=True, msg=key)


def loader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("sa1b-loader")]


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_same_batches_as_dataloader_whatever_the_threads(dataset, threads):
    want = reference(dataset, seed=1, epoch=1)
    sampler = SA1BSampler(dataset, 1, 0, seed=1)
    loader = SA1BLoader(dataset, 3, threads=threads, sampler=sampler, copy=True)
    loader.set_epoch(1)
    got = list(loader)
    assert len(got) == len(want) == len(loader)
    for a, b in zip(got, want, strict=True):
        assert_same(a, b)
    assert not loader_threads()


def test_every_mask_when_sampling_all_grows_the_buffers(packed_dir):
    ds = SA1BDataset(packed_dir, **{**RECIPE, "mask_sampling": "all"})
    want = reference(ds, batch_size=4)
    got = list(SA1BLoader(ds, 4, threads=2, sampler=SA1BSampler(ds, 1, 0), copy=True))
    for a, b in zip(got, want, strict=True):
        assert_same(a, b)


def erode(masks, valid, rng):
    """A mask-only transform: drop a random half of each mask's valid pixels."""
    masks[:, : valid[0], : valid[1]] &= rng.random((len(masks), *valid)) < 0.5
    return masks


@pytest.mark.parametrize("sampling", ["random", "all"])
def test_relations_and_transforms_same_as_dataloader(packed_dir, sampling):
    augment = Compose(HorizontalFlip(), ResizeJitter(0.6, 1.5))
    ds = SA1BDataset(packed_dir, **{**RECIPE, "mask_sampling": sampling}, relations=True,
                     transform=augment, mask_transform=erode)  # fmt: skip
    want = reference(ds, seed=2, batch_size=4)
    sampler = SA1BSampler(ds, 1, 0, seed=2)
    got = list(SA1BLoader(ds, 4, threads=3, sampler=sampler, prefetch=1, copy=True))
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        assert set(RELATIONS) <= set(a)
        assert_same(a, b)
        batch, k = a["masks"].shape[:2]
        assert a["iou"].shape == a["containment"].shape == (batch, k, k)
        for b, n in enumerate(a["mask_valid"].sum(1).tolist()):  # padded on both axes
            assert not a["iou"][b, n:].any() and not a["iou"][b, :, n:].any()
            assert not a["centroids"][b, n:].any()
    plain = reference(SA1BDataset(packed_dir, **{**RECIPE, "mask_sampling": sampling}),
                      seed=2, batch_size=4)  # fmt: skip
    assert any(not torch.equal(a["boxes"], b["boxes"]) for a, b in zip(got, plain, strict=True))


def test_a_batch_stays_valid_for_prefetch_more_batches(dataset):
    want = reference(dataset, batch_size=2)
    prefetch = 3
    loader = SA1BLoader(dataset, 2, threads=2, sampler=SA1BSampler(dataset, 1, 0),
                        prefetch=prefetch)  # fmt: skip
    batches = iter(loader)
    held = [next(batches)]
    for _ in range(prefetch - 1):  # the loader yields prefetch - 1 more: held[0] untouched
        held.append(next(batches))
    for n, batch in enumerate(held):
        assert_same(batch, want[n])
    batches.close()
    assert not loader_threads()


def test_resume_through_the_sampler_state(dataset):
    want = reference(dataset, seed=4, batch_size=2)
    first = SA1BLoader(dataset, 2, threads=2, sampler=SA1BSampler(dataset, 1, 0, seed=4),
                       copy=True)  # fmt: skip
    batches = iter(first)
    seen = [next(batches) for _ in range(2)]  # the threads have run ahead of these
    state = first.state_dict()
    batches.close()
    assert state["consumed"] == 4
    resumed = SA1BLoader(dataset, 2, threads=2, sampler=SA1BSampler(dataset, 1, 0, seed=4))
    resumed.load_state_dict(state)
    rest = [{k: v.clone() for k, v in b.items()} for b in resumed]
    for a, b in zip(seen + rest, want, strict=True):
        assert_same(a, b)


@pytest.mark.parametrize("stop", ["break", "exception", "interrupt"])
def test_threads_stop_when_the_loop_does(dataset, stop):
    loader = SA1BLoader(dataset, 2, threads=3, prefetch=2)
    raised = {"exception": RuntimeError, "interrupt": KeyboardInterrupt}.get(stop)
    try:
        for _batch in loader:
            if raised:
                raise raised("stop")
            break
    except (RuntimeError, KeyboardInterrupt):
        pass
    assert not loader_threads()


def test_a_failing_sample_names_itself(dataset, monkeypatch):
    real = threaded.training_sample
    bad = int(dataset.index[3])

    def failing(store, index, *args, **kw):
        if index == bad:
            raise ValueError("corrupt mask string")
        return real(store, index, *args, **kw)

    monkeypatch.setattr(threaded, "training_sample", failing)
    image_id = dataset.store[bad].image_id
    with pytest.raises(SampleError, match=f"sample 3 \\(image id {image_id}, epoch 0\\).*"
                                          "ValueError: corrupt mask string"):  # fmt: skip
        list(SA1BLoader(dataset, 2, threads=2))
    assert not loader_threads()


def test_options(dataset):
    with pytest.raises(ValueError, match="not both"):
        SA1BLoader(dataset, 2, sampler=SA1BSampler(dataset, 1, 0), shuffle=True)
    shuffled = SA1BLoader(dataset, 2, shuffle=True, copy=True)
    ids = torch.cat([b["image_id"] for b in shuffled]).tolist()
    assert sorted(ids) == sorted(int(dataset.store[int(k)].image_id) for k in dataset.index)
    assert len(SA1BLoader(dataset, 4, drop_last=True)) == len(dataset) // 4
    pinned = iter(SA1BLoader(dataset, 2, pin_memory=True))  # no CUDA here: not pinned, a warning
    assert next(pinned)["image"].shape == (2, 3, 48, 48)
    pinned.close()
    assert not loader_threads()


@pytest.fixture(scope="module")
def attached_store(packed_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The packed store with a (4, 8, 8) float16 array per image, every third one missing."""
    import shutil

    import numpy as np

    from sa1b_pack.write.attach import attach

    dst = tmp_path_factory.mktemp("attached") / "store"
    shutil.copytree(packed_dir, dst)

    def teacher(sample):
        if sample.image_id % 3 == 0:
            return None
        return np.random.default_rng(sample.image_id).normal(size=(4, 8, 8)).astype(np.float16)

    attach(dst, "teacher", teacher, allow_missing=True, progress=False)
    return dst


@pytest.mark.parametrize(("threads", "sampling"), [(1, "random"), (2, "random"), (2, "all")])
def test_attached_arrays_in_the_same_batches_as_dataloader(attached_store, threads, sampling):
    ds = SA1BDataset(attached_store, attached=["teacher"], **{**RECIPE, "mask_sampling": sampling})
    x = ds[0]
    s = ds.store[int(ds.index[0])]
    assert torch.equal(x["teacher"], torch.from_numpy(s.attached("teacher").copy()))
    assert x["teacher"].dtype == torch.float16 and x["teacher_present"].dtype == torch.bool
    want = reference(ds, batch_size=4)
    got = list(SA1BLoader(ds, 4, threads=threads, sampler=SA1BSampler(ds, 1, 0), copy=True))
    assert len(got) == len(want)
    presence = []
    for a, b in zip(got, want, strict=True):
        assert_same(a, b)
        assert a["teacher"].shape == (len(a["image"]), 4, 8, 8)
        for key in ("teacher", "teacher_present"):
            assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key
        presence += a["teacher_present"].tolist()
    assert True in presence and False in presence


def test_an_array_not_attached_is_a_clear_error(packed_dir):
    with pytest.raises(StoreError, match="'teacher' is not attached to every shard"):
        SA1BDataset(packed_dir, attached=["teacher"], **RECIPE)

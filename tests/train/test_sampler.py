"""SA1BSampler: one global order per (seed, epoch), exact resume through StatefulDataLoader,
elastic resume to other world sizes and worker counts through global positions."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="optional dependency: pip install sa1b-pack[torch]")
pytest.importorskip("torchdata", reason="optional dependency: pip install sa1b-pack[torch]")

import torch
from torch.utils.data import DataLoader
from torchdata.stateful_dataloader import StatefulDataLoader

from sa1b_pack.torch import SA1BDataset, SA1BSampler, collate

RECIPE = dict(image_size=32, mask_size=8, max_masks=3, mask_sampling="random")
BATCH = 2


@pytest.fixture(scope="module")
def dataset(packed_dir: Path) -> SA1BDataset:
    return SA1BDataset(packed_dir, **RECIPE)


def samples(batches) -> list[tuple[int, tuple[int, ...]]]:
    """(image id, drawn mask ids) of every sample, in order: what must match exactly."""
    out = []
    for b in batches:
        for j in range(len(b["image_id"])):
            ids = b["mask_ids"][j][b["mask_valid"][j]].tolist()
            out.append((int(b["image_id"][j]), tuple(ids)))
    return out


def loader(ds, sampler, workers: int, stateful: bool = True, context: str | None = None, **kw):
    kind = StatefulDataLoader if stateful else DataLoader
    return kind(ds, batch_size=BATCH, sampler=sampler, num_workers=workers, collate_fn=collate,
                multiprocessing_context=context if workers else None, **kw)  # fmt: skip


def take(source, k: int) -> list:
    """The samples of the first ``k`` batches, leaving the loader's iterator after them."""
    batches = iter(source)
    return samples([next(batches) for _ in range(k)])


def full_epoch(ds, **sampler_kw) -> list:
    sampler = SA1BSampler(ds, num_replicas=1, rank=0, **sampler_kw)
    return samples(loader(ds, sampler, 0))


@pytest.mark.parametrize("order", ["uniform", "blocks", "nodes"])
def test_an_epoch_is_the_same_whatever_the_workers_and_run(dataset, packed_dir, order):
    reference = full_epoch(dataset, seed=5, order=order, window=1)
    assert sorted(i for i, _ in reference) == sorted(int(dataset.store[int(k)].image_id)
                                                       for k in dataset.index)  # fmt: skip
    for workers in (1, 2):
        sampler = SA1BSampler(dataset, 1, 0, seed=5, order=order, window=1)
        assert samples(loader(dataset, sampler, workers)) == reference
    again = SA1BDataset(packed_dir, **RECIPE)
    assert full_epoch(again, seed=5, order=order, window=1) == reference
    assert full_epoch(dataset, seed=6, order=order, window=1) != reference


@pytest.mark.parametrize(
    "workers,context",
    [(0, None), (1, "fork"), (2, "fork"), pytest.param(2, "spawn", marks=pytest.mark.slow)],
)
@pytest.mark.parametrize("k", [0, 1, 3])
def test_exact_resume_after_k_batches(dataset, workers, context, k):
    sampler = SA1BSampler(dataset, 1, 0, seed=1)
    sampler.set_epoch(2)
    whole = samples(loader(dataset, sampler, workers, context=context))
    first = SA1BSampler(dataset, 1, 0, seed=1)
    first.set_epoch(2)
    interrupted = loader(dataset, first, workers, context=context)
    seen = take(interrupted, k)
    state = interrupted.state_dict()
    resumed_sampler = SA1BSampler(dataset, 1, 0, seed=1)
    resumed = loader(dataset, resumed_sampler, workers, context=context)
    resumed.load_state_dict(state)
    assert seen + samples(resumed) == whole


@pytest.mark.slow
def test_resume_in_a_new_process(dataset, packed_dir, tmp_path):
    whole = samples(loader(dataset, SA1BSampler(dataset, 1, 0, seed=3), 2))
    first = loader(dataset, SA1BSampler(dataset, 1, 0, seed=3), 2)
    seen = take(first, 2)
    torch.save(first.state_dict(), tmp_path / "state.pt")
    code = f"""
import json, sys, torch
from tests.train.test_sampler import loader, samples, RECIPE
from sa1b_pack.torch import SA1BDataset, SA1BSampler
ds = SA1BDataset({str(packed_dir)!r}, **RECIPE)
resumed = loader(ds, SA1BSampler(ds, 1, 0, seed=3), 2)
resumed.load_state_dict(torch.load({str(tmp_path / "state.pt")!r}, weights_only=False))
print(json.dumps(samples(resumed)))
"""
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=root, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    rest = [(i, tuple(m)) for i, m in json.loads(proc.stdout.strip().splitlines()[-1])]
    assert seen + rest == whole


def test_two_workers_to_one_through_the_sampler_state(dataset):
    whole = samples(loader(dataset, SA1BSampler(dataset, 1, 0, seed=4), 0))
    first = loader(dataset, SA1BSampler(dataset, 1, 0, seed=4), 2)
    seen = take(first, 3)
    sampler = SA1BSampler(dataset, 1, 0, seed=4)
    sampler.load_state_dict(first.state_dict())  # the loader's state, exact at 3 batches
    assert sampler.state_dict()["consumed"] == 3 * BATCH
    rest = samples(loader(dataset, sampler, 1, stateful=False))
    assert seen + rest == whole


@pytest.mark.parametrize("before,after", [(2, 3), (4, 1), (3, 2)])
@pytest.mark.parametrize("order", ["uniform", "blocks"])
def test_elastic_resume_covers_the_epoch_exactly(dataset, before, after, order):
    n, steps = len(dataset), 3
    ranks = [SA1BSampler(dataset, before, r, seed=7, order=order, window=1) for r in range(before)]
    for s in ranks:
        s.set_epoch(1)
    iters = [iter(s) for s in ranks]
    done = [next(it) for _ in range(steps) for it in iters]  # ranks step together
    state = ranks[0].state_dict()
    assert state["consumed"] == steps * before and state["epoch"] == 1
    resumed = [SA1BSampler(dataset, after, r, seed=7, order=order, window=1)
               for r in range(after)]  # fmt: skip
    rest = []
    for s in resumed:
        s.load_state_dict(state)
        rest += list(s)
    assert {e for _, e in done + rest} == {1}
    got = [i for i, _ in done + rest]
    padding = len(got) - n
    assert 0 <= padding < after and sorted(set(got)) == list(range(n))  # no gaps
    assert len(got) - len(set(got)) == padding  # no repeats but the end's padding
    reference = SA1BSampler(dataset, 1, 0, seed=7, order=order, window=1)
    reference.set_epoch(1)
    whole = reference.global_order().tolist()  # the epoch's one global order
    consumed = steps * before
    assert sorted(got[: len(done)]) == sorted(whole[:consumed])
    rest_set = set(got[len(done) :])
    assert set(whole[consumed:]) <= rest_set  # every position not consumed, after the resume
    assert rest_set - set(whole[consumed:]) <= set(whole[:padding])  # the end wraps to the start


def test_persistent_workers_follow_set_epoch(dataset):
    sampler = SA1BSampler(dataset, 1, 0, seed=2, shuffle=False)
    persistent = loader(dataset, sampler, 2, stateful=False, persistent_workers=True)
    epochs = []
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        assert dataset.epoch == epoch
        epochs.append(samples(persistent))
    direct = [samples([collate([dataset[(i, 1)]])])[0] for i in range(len(dataset))]
    assert epochs[1] == direct != epochs[0]


def test_process_group_defaults_and_bad_arguments(dataset):
    sampler = SA1BSampler(dataset)
    assert (sampler.num_replicas, sampler.rank) == (1, 0) and len(sampler) == len(dataset)
    with pytest.raises(ValueError, match="rank 2 out of range"):
        SA1BSampler(dataset, 2, 2)
    with pytest.raises(ValueError, match="no SA1BSampler state"):
        sampler.load_state_dict({"something": "else"})
    saved = SA1BSampler(dataset, 1, 0, seed=9).state_dict()
    with pytest.raises(ValueError, match="seed=9"):
        sampler.load_state_dict(saved)
    np.testing.assert_array_equal(sorted(sampler.global_order()), np.arange(len(dataset)))


@pytest.mark.parametrize("workers,k", [(0, 2), (2, 1), (2, 3)])
def test_exact_resume_of_the_node_order_through_the_loader(dataset, workers, k):
    def sampler() -> SA1BSampler:  # rank 1 of 2 nodes: 1 of the 3 parts, padded
        s = SA1BSampler(dataset, 2, 1, seed=1, order="nodes", ranks_per_node=1, window=2)
        s.set_epoch(2)
        return s

    whole = samples(loader(dataset, sampler(), workers, context="fork"))
    interrupted = loader(dataset, sampler(), workers, context="fork")
    seen = take(interrupted, k)
    resumed = loader(dataset, sampler(), workers, context="fork")
    resumed.load_state_dict(interrupted.state_dict())
    assert seen + samples(resumed) == whole


def test_a_plain_epoch_and_consumed_state_is_accepted(dataset):
    """A run resumed from a plain DataLoader loop that counted batches*batch_size*world."""
    sampler = SA1BSampler(dataset, 2, 1, seed=4)
    sampler.load_state_dict({"epoch": 1, "consumed": 800})  # past this small epoch's end
    assert sampler.epoch == dataset.epoch == 1 and len(sampler) == 0 and list(sampler) == []
    sampler.load_state_dict({"epoch": 1, "consumed": 6, "order": "uniform"})
    reference = SA1BSampler(dataset, 1, 0, seed=4)
    reference.set_epoch(1)
    order = reference.global_order()
    wrapped = np.resize(order, len(order) + 1)  # padding wraps like DistributedSampler
    assert [i for i, _ in sampler] == wrapped[7::2].tolist()
    with pytest.raises(ValueError, match="order='blocks'"):
        sampler.load_state_dict({"epoch": 1, "consumed": 6, "order": "blocks"})

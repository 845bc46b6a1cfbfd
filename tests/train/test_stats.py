"""Where the time goes (train/stats.py): every stage counted once per sample or batch, nothing
lost between threads, the loop's waits, the summary's verdict; recording changes no batch.
No timing is asserted beyond >= 0: the counts and the arithmetic are what can be checked."""

from __future__ import annotations

import pickle
import threading
from pathlib import Path

import pytest

from sa1b_pack.train import stats
from sa1b_pack.train.stats import STAGES, LoaderStats, StageTimes
from sa1b_pack.train.transforms import HorizontalFlip

torch = pytest.importorskip("torch", reason="the loaders need torch")
from torch.utils.data import DataLoader  # noqa: E402

from sa1b_pack.torch import SA1BDataset, SA1BLoader, collate  # noqa: E402

RECIPE = dict(image_size=48, mask_size=12, max_masks=4, points_per_mask=3, box_noise=0.1)


@pytest.fixture(scope="module")
def dataset(packed_dir: Path) -> SA1BDataset:
    return SA1BDataset(packed_dir, transform=HorizontalFlip(), **RECIPE)


def check_counts(got: LoaderStats, samples: int, batches: int) -> None:
    assert got.samples == samples and got.batches == batches
    for name in STAGES:
        stage = got.stages[name]
        assert stage.count == (batches if name == "collate" else samples), name
        assert stage.seconds >= 0 and stage.ms_per_sample >= 0, name
    assert got.wait_s >= 0 and got.loop_s >= 0 and got.first_batch_s >= 0


def test_loader_counts_every_stage_of_every_sample_and_batch(dataset):
    loader = SA1BLoader(dataset, 4, threads=2)
    for epoch in range(2):
        loader.set_epoch(epoch)
        for _ in loader:
            pass
    got = loader.stats()
    check_counts(got, 2 * len(dataset), 2 * len(loader))
    line = got.summary()
    assert "is the bottleneck" in line and all(name in line for name in STAGES)
    assert "\n" not in line and got.threads == 2
    check_counts(loader.stats(reset=True), 2 * len(dataset), 2 * len(loader))
    check_counts(loader.stats(), 0, 0)
    for _ in loader:
        pass
    check_counts(loader.stats(), len(dataset), len(loader))
    assert len(loader.stage_times._by_thread) <= 2 + 1  # ended epochs' threads folded in


def test_stats_off_records_nothing_and_changes_no_batch(dataset):
    on = [{k: v.clone() for k, v in b.items()} for b in SA1BLoader(dataset, 4, threads=2)]
    quiet = SA1BLoader(dataset, 4, threads=2, stats=False, copy=True)
    off = list(quiet)
    for a, b in zip(on, off, strict=True):
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, equal_nan=True)
    check_counts(quiet.stats(), 0, 0)


def test_dataset_counts_the_samples_made_in_this_process(packed_dir, dataset):
    ds = SA1BDataset(packed_dir, transform=HorizontalFlip(), **RECIPE)
    for _ in DataLoader(ds, 4, collate_fn=collate):  # num_workers=0: made here
        pass
    got = ds.stats()
    assert got.samples == len(ds) and got.batches == 0
    assert all(got.stages[name].count == len(ds) for name in STAGES)  # collate: to tensors
    assert "no training loop timed" in got.summary()
    ds.stats(reset=True)
    for _ in DataLoader(ds, 4, collate_fn=collate, num_workers=2):  # made in the workers
        pass
    assert ds.stats().samples == 0  # per process, as documented
    assert SA1BDataset(packed_dir, stats=False, **RECIPE)[0] is not None


def test_threads_lose_no_update_and_workers_start_afresh():
    times = StageTimes()

    def work() -> None:
        for _ in range(20_000):
            times.add(stats.READ, 3)
            lap = times.start()
            lap(stats.IMAGE)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    totals = times.totals()
    assert totals[stats.READ] == 8 * 20_000 * 3
    assert totals[stats.SLOTS + stats.READ] == totals[stats.SLOTS + stats.IMAGE] == 160_000
    fresh = pickle.loads(pickle.dumps(times))  # what a DataLoader worker gets
    assert fresh.totals() == [0] * (2 * stats.SLOTS)


def verdict(wait_s: float, loop_s: float) -> str:
    totals = [0] * (2 * stats.SLOTS)
    totals[stats.WAIT], totals[stats.LOOP] = int(wait_s * 1e9), int(loop_s * 1e9)
    totals[stats.SLOTS + stats.WAIT] = totals[stats.SLOTS + stats.FIRST] = 5
    totals[stats.IMAGE] = 10**9  # 1 s over 100 samples
    totals[stats.SLOTS + stats.READ] = totals[stats.SLOTS + stats.IMAGE] = 100
    return LoaderStats.of(totals, threads=2).summary()


def test_the_summary_names_the_bottleneck():
    slow_loader = verdict(wait_s=3.0, loop_s=7.0)
    assert slow_loader.startswith("the loader is the bottleneck: the loop waited 30%")
    assert "most time in image" in slow_loader and "image 10.00" in slow_loader
    assert verdict(wait_s=0.05, loop_s=9.95).startswith("the model is the bottleneck")
    assert "one batch so far" in LoaderStats.of([0] * stats.SLOTS + [0] * 8 + [1]).summary()

"""Memory does not grow epoch after epoch: persistent DataLoader workers and SA1BLoader.

Measured as anonymous resident memory (/proc RssAnon: heap and buffers, not the store's
mapped pages) of the main process and of each worker after epoch 4 and after epoch 10; every
epoch reads the same samples (new order, new mask draws), so nothing new should be kept.

Why epoch 4 and the bound: without a leak, a persistent worker's anon memory rose ~2 MB per
epoch for the first 3-4 epochs (glibc keeping freed blocks as its mmap threshold adapts),
then stayed within 1 MB (measured on the 2-core VM: 5.3 MB from epoch 2 to 10, 0.8 MB from
4 to 10). A worker that kept every sample it made (``Leaky``) grows every epoch by its share
of the samples, 12 x (256*256*3 + 16*64*64) bytes = 2.4 MB (2.9 MB measured, with the
tensors' overhead), so 14-17 MB from epoch 4 to 10. The bound, half that leak, is ~9x the
growth measured without one and is exceeded ~2.4x by the deliberate leak, which
``test_the_bound_catches_a_leak`` checks.
"""

from __future__ import annotations

import gc
import os
from pathlib import Path
from typing import Any, ClassVar

import pytest

pytest.importorskip("torch", reason="optional dependency: pip install sa1b-pack[torch]")

from torch.utils.data import DataLoader

from sa1b_pack.torch import SA1BDataset, SA1BLoader, collate, release_freed_memory

pytestmark = pytest.mark.slow  # ten epochs per case

RECIPE = dict(image_size=256, mask_size=64, max_masks=16, seed=0)
FIRST, LAST = 4, 10  # epochs compared: the first ones settle the allocators
MB = 1 << 20
LEAK_FRACTION = 0.5
WORKERS = 2  # each holds its share of a leak


def anon(pid: int) -> float:
    """Anonymous resident memory of a process, MB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024 / MB
    raise AssertionError("no RssAnon in /proc/pid/status")


def per_epoch(loader: Any, dataset: SA1BDataset, epochs: int) -> list[list[float]]:
    """Per epoch: anon MB of [main process, each worker], taken at the epoch's last batch."""
    out = []
    for epoch in range(epochs):
        dataset.set_epoch(epoch)
        iterator = iter(loader)
        for k, _ in enumerate(iterator):
            if k == len(loader) - 1:
                gc.collect()
                workers = [w.pid for w in getattr(iterator, "_workers", [])]
                out.append([anon(os.getpid()), *map(anon, workers)])
        del iterator
    return out


def sample_bytes(dataset: SA1BDataset) -> int:
    """What keeping one sample (image + its masks) costs, at most."""
    s, m, k = (RECIPE[f] for f in ("image_size", "mask_size", "max_masks"))
    return s * s * 3 + k * m * m


def growth(memory: list[list[float]]) -> float:
    """Largest anon growth of any process from epoch FIRST to epoch LAST, MB."""
    return max(b - a for a, b in zip(memory[FIRST - 1], memory[LAST - 1], strict=True))


class Leaky(SA1BDataset):
    """A dataset that keeps every sample it makes: the growth the bound must catch."""

    kept: ClassVar[list[Any]] = []

    def __getitem__(self, key: Any) -> dict[str, Any]:
        sample = super().__getitem__(key)
        self.kept.append(sample)
        return sample


def loaders(dataset: SA1BDataset) -> dict[str, Any]:
    return {
        "DataLoader, 2 persistent fork workers": DataLoader(
            dataset, 4, collate_fn=collate, num_workers=2, persistent_workers=True,
            multiprocessing_context="fork"),
        "SA1BLoader, 2 threads": SA1BLoader(dataset, 4, threads=2),
    }  # fmt: skip


def bound(dataset: SA1BDataset) -> float:
    """MB: LEAK_FRACTION of what one worker keeping its share of the samples would add."""
    share = len(dataset) / WORKERS * sample_bytes(dataset)
    return LEAK_FRACTION * (LAST - FIRST) * share / MB


@pytest.mark.parametrize("case", ["DataLoader, 2 persistent fork workers", "SA1BLoader, 2 threads"])
def test_no_growth_over_ten_epochs(packed_dir: Path, case: str) -> None:
    dataset = SA1BDataset(packed_dir, **RECIPE)
    dataset[0]  # numba kernels loaded before the fork, as in training
    loader = loaders(dataset)[case]
    memory = per_epoch(loader, dataset, LAST)
    assert growth(memory) < bound(dataset), (case, memory)


def test_the_bound_catches_a_leak(packed_dir: Path) -> None:
    """Workers keeping every sample they make exceed the bound: it can fail."""
    dataset = Leaky(packed_dir, **RECIPE)
    dataset[0]
    Leaky.kept.clear()
    # Heap an earlier test freed but glibc kept resident would be inherited by the forked
    # workers, and the leak would fill it without any growth to see: give it back first.
    release_freed_memory()
    loader = loaders(dataset)["DataLoader, 2 persistent fork workers"]
    memory = per_epoch(loader, dataset, LAST)
    leaked = (LAST - FIRST) * len(dataset) / WORKERS * sample_bytes(dataset) / MB
    assert growth(memory) > bound(dataset), (memory, leaked)

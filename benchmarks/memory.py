"""Memory over a long run: RSS of the main process and of each worker after epoch 1 and after
the last epoch, for DataLoader (2 workers: fork, fork persistent, spawn persistent) and
SA1BLoader (2 threads).

"Memory keeps growing during iteration" is the classic SA-1B loader complaint: a cache that
never evicts, a buffer regrown every epoch, Python objects whose refcounts copy a forked
worker's pages. Every epoch reads the same samples (new mask draws, new order), so the store
pages a process maps are all touched in epoch 1: what grows after it is the loader's own.
Each process is measured as it holds the epoch's last batch (workers that end with the epoch
are still alive then): RSS, USS (its private pages) and anonymous memory (/proc RssAnon: heap
and buffers, not the store's mapped pages, which the kernel can drop at will).

Spawn workers are persistent here: started afresh every epoch they cost ~10 s each time on
this 2-core VM (a new interpreter importing torch), and nobody trains that way for long.
One more case fixes glibc's mmap threshold in the workers (``worker_init_fn``): what it
removes from the growth is memory malloc keeps for reuse, not memory anything still holds.
"""

from __future__ import annotations

import ctypes
import gc
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from harness import Ctx, Result, question, row, spread
from harness import recipe as recipe_of
from torch.utils.data import DataLoader

from sa1b_pack.torch import SA1BDataset, SA1BLoader, collate

MB = 1e6
M_MMAP_THRESHOLD = -3  # mallopt parameter, glibc's malloc.h


def fixed_mmap_threshold(_worker: int) -> None:
    """worker_init_fn: blocks of 1 MB and more always mmapped, so freed ones go back to the OS
    (glibc raises the threshold to the largest block freed, up to 32 MB, and keeps freed heap)."""
    ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, 1 << 20)


class EpochKeys:
    """The same positions every epoch, reshuffled, each carrying its epoch ``(index, epoch)``
    so persistent workers draw that epoch's masks (what SA1BSampler yields)."""

    def __init__(self, positions: list[int], seed: int) -> None:
        self.positions, self.seed, self.epoch = positions, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.positions)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = np.random.default_rng((self.seed, self.epoch)).permutation(self.positions)
        return iter([(int(i), self.epoch) for i in order])


def memory(pid: int) -> dict[str, float]:
    """RSS, USS and anonymous resident memory of one process, in MB."""
    info = psutil.Process(pid).memory_full_info()
    anon = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            anon = int(line.split()[1]) * 1024 / MB
    return {"rss": info.rss / MB, "uss": info.uss / MB, "anon": anon}


def worker_pids(iterator: Any) -> list[int]:
    """The worker processes of a DataLoader iterator (none for SA1BLoader's threads)."""
    return [w.pid for w in getattr(iterator, "_workers", [])]


def epochs(loader: Iterable, keys: EpochKeys, count: int) -> list[dict[str, Any]]:
    """Run ``count`` epochs; after each, its seconds and the memory of the main process and of
    each worker, taken while the epoch's last batch is held."""
    snaps = []
    for epoch in range(count):
        keys.set_epoch(epoch)
        t0 = time.perf_counter()
        iterator = iter(loader)
        last = len(loader) - 1  # type: ignore[arg-type]
        for k, _ in enumerate(iterator):
            if k == last:
                seconds = time.perf_counter() - t0
                gc.collect()
                snaps.append({"seconds": seconds, "main": memory(psutil.Process().pid),
                              "workers": [memory(p) for p in worker_pids(iterator)]})  # fmt: skip
        del iterator
    return snaps


PLAIN = "DataLoader W=2 fork persistent"
FIXED = f"{PLAIN}, mmap threshold 1 MB"
FORK, PERSISTENT = dict(multiprocessing_context="fork"), dict(persistent_workers=True)
CASES = {
    "DataLoader W=2 fork": FORK,
    PLAIN: FORK | PERSISTENT,
    "DataLoader W=2 spawn persistent": dict(multiprocessing_context="spawn") | PERSISTENT,
    FIXED: FORK | PERSISTENT | dict(worker_init_fn=fixed_mmap_threshold),
    "SA1BLoader threads=2": None,
}


def growth(a: float, b: float) -> float:
    return 100.0 * (b - a) / a


def case_rows(name: str, snaps: list[dict[str, Any]], samples: int) -> list[dict[str, Any]]:
    """RSS after the first and the last epoch, and the growth between, per kind of process."""
    first, end, count = snaps[0], snaps[-1], len(snaps)
    rows = [row(f"{name}: epoch", [samples / s["seconds"] for s in snaps], "samples/s")]
    procs = [("main process", [first["main"]], [end["main"]])]
    if first["workers"]:
        procs.append(("each worker", first["workers"], end["workers"]))
    for proc, a, b in procs:
        what = "USS {:.0f} -> {:.0f} MB, anon {:.0f} -> {:.0f} MB".format(
            np.median([p["uss"] for p in a]), np.median([p["uss"] for p in b]),
            np.median([p["anon"] for p in a]), np.median([p["anon"] for p in b]))  # fmt: skip
        change = [growth(p["rss"], q["rss"]) for p, q in zip(a, b, strict=True)]
        rows += [row(f"{name}: {proc}, RSS after epoch 1", [p["rss"] for p in a], "MB"),
                 row(f"{name}: {proc}, RSS after epoch {count}", [p["rss"] for p in b], "MB",
                     what=what),
                 row(f"{name}: {proc}, RSS growth epoch 1 -> {count}", change, "%")]  # fmt: skip
    return rows


@question(
    "memory",
    "Does memory grow over a long run (epoch 1 against epoch 10), in the main "
    "process or the workers of DataLoader (fork, spawn, persistent) or in SA1BLoader?",
)
def memory_question(ctx: Ctx) -> Result:
    count, batch, recipe = ctx.size(10, 3), 4, recipe_of(ctx, filtered=False)
    size, m = recipe["image_size"], recipe["mask_size"]
    ds = SA1BDataset(ctx.store, **recipe)
    keys = EpochKeys(spread(len(ds), ctx.size(12, 4, 32), ctx.seed), ctx.seed)
    ds[keys.positions[0]]  # numba kernels loaded before any fork, as a trainer's first step
    rows = []
    for name, options in CASES.items():
        if options is None:
            loader: Any = SA1BLoader(ds, batch, threads=2, sampler=keys)
        else:
            loader = DataLoader(ds, batch, sampler=keys, collate_fn=collate, num_workers=2,
                                **options)  # fmt: skip
        snaps = epochs(loader, keys, count)
        del loader
        gc.collect()  # persistent workers shut down before the next case
        rows += case_rows(name, snaps, len(keys))
    notes = [
        f"{len(keys)} samples per epoch (the same ones, reshuffled, new mask draws), batch "
        f"{batch}, image {size}, up to 64 masks at {m}; {count} epochs per case; "
        "memory taken holding each epoch's last batch; 'each worker': n = 2 workers"
    ]
    return Result(rows, notes)

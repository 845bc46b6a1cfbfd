"""SA1BDataset through a DataLoader (0 workers, 2 fork, 2 spawn; full-size and pre-resized
store) against the floor: decode + resize of the same images alone; and what a 2 MiB teacher
embedding attached to every image (distillation) adds per sample."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import harness as h
import numpy as np
from harness import Ctx, Result, question
from torch.utils.data import DataLoader, Subset

from sa1b_pack.codec.jpeg import decode_image
from sa1b_pack.torch import SA1BDataset, SA1BLoader, collate
from sa1b_pack.write.attach import attach

PRE = "pre-resized, W=0"
TEACHER = (256, 64, 64)  # SAM ViT-H's image embedding, float16: 2 MiB per image
T = "+ teacher 2 MiB, "
REF = {"W=2 fork": "W=0", "W=2 spawn": "W=2 fork", PRE: "W=0", "pre-resized, W=2 fork": PRE,
       "threads=1": "W=0", "threads=2": "threads=1", "pre-resized, threads=1": PRE,
       "pre-resized, threads=2": "pre-resized, threads=1",
       f"{T}W=0": "W=0", f"{T}threads=2": "threads=2"}  # fmt: skip


def with_teacher(store: Path, dst: Path) -> Path:
    """A copy of the store (hard links: the original is untouched, attach adds new files and
    replaces the copy's manifest) with a 2 MiB float16 array attached to every image."""
    shutil.copytree(store, dst, copy_function=os.link)

    def embedding(sample) -> np.ndarray:
        return np.random.default_rng(sample.image_id).normal(size=TEACHER).astype(np.float16)

    attach(dst, "teacher", embedding, jobs=2, progress=False)
    return dst


@question("loader", "How close is the training DataLoader to the JPEG decode + resize floor, "
          "and what do workers and a pre-resized store change?")  # fmt: skip
def loader(ctx: Ctx) -> Result:
    recipe, batch = h.recipe(ctx), 8
    size, m = recipe["image_size"], recipe["mask_size"]
    ds = SA1BDataset(ctx.store, **recipe)
    positions = h.spread(len(ds), ctx.size(48, 6, 96), ctx.seed)
    sets = {"": ds}
    if not ctx.full:  # a real store's pre-resized copy would take minutes to pack
        resized = h.pack_store(ctx.tars, ctx.work / "loader-resized", image_longest=size)
        sets["pre-resized, "] = SA1BDataset(resized, **recipe)
    ds[positions[0]]  # numba kernels compiled/loaded before any fork
    loaders = {}
    for prefix, data in sets.items():
        for workers, how in ((0, None), (2, "fork"), (2, "spawn")):
            if prefix and how == "spawn":
                continue
            name = f"{prefix}W={workers}" + (f" {how}" if how else "")
            loaders[name] = DataLoader(Subset(data, positions), batch, collate_fn=collate,
                                       num_workers=workers, persistent_workers=workers > 0,
                                       multiprocessing_context=how)  # fmt: skip
        for threads in sorted({1, 2, os.cpu_count() or 1}):
            loaders[f"{prefix}threads={threads}"] = SA1BLoader(data, batch, threads=threads,
                                                               sampler=positions)  # fmt: skip
    if not ctx.full:  # on real shards: 2 MiB x every image of the store; not here
        taught = SA1BDataset(with_teacher(ctx.store, ctx.work / "loader-teacher"),
                             attached=["teacher"], **recipe)  # fmt: skip
        loaders[f"{T}W=0"] = DataLoader(Subset(taught, positions), batch, collate_fn=collate)
        loaders[f"{T}threads=2"] = SA1BLoader(taught, batch, threads=2, sampler=positions)
    first = {}
    for name, lo in loaders.items():  # untimed: starts the persistent workers
        t0 = time.perf_counter()
        h.drain(lo)
        first[name] = time.perf_counter() - t0
    image = np.ones((size, size, 3), np.uint8)
    samples = [ds.store[int(ds.index[p])] for p in positions]

    def floor() -> None:
        for s in samples:
            decode_image(s.jpeg, s.height, s.width, size, image)

    cases = {name: (lambda lo=lo: h.drain(lo)) for name, lo in loaders.items()}
    sec = h.side_by_side({**cases, "floor": floor}, ctx.size(5, 1), warmup=0)
    n, fl = len(positions), sec.pop("floor")
    rate = {name: [n / v for v in t] for name, t in sec.items()}
    rows = [h.row(f"{'SA1BLoader' if 'threads' in name else 'SA1BDataset'}, {name}", r,
                  "samples/s",
                  f"{h.x(h.ratio(r, rate[REF[name]]))} {REF[name]}" if name in REF else "ref",
                  f"batch {batch}" + ("; persistent workers" if "W=2" in name else "")
                  + ("; threads in this process" if "threads" in name else ""))
            for name, r in rate.items()]  # fmt: skip
    for name in (n for n in sec if n.startswith(T)):
        base = REF[name]
        added = [1e3 * (a - b) / n for a, b in zip(sec[name], sec[base], strict=True)]
        rows.append(h.row(f"added by the teacher array, {base}", added, "ms/sample",
                          what=f"per round: ({name}) - ({base}), per sample"))  # fmt: skip
    floor_ms = [1e3 * v / n for v in fl]
    rows.append(h.row("floor: decode_image only", floor_ms, "ms/sample",
                      f"W=0 takes {h.x(1e3 / h.p50(rate['W=0']) / h.p50(floor_ms))} its time",
                      f"DCT-scaled decode + resize + pad into ({size},{size},3)"))  # fmt: skip
    notes = [f"{n} images per epoch, image {size}, up to 64 masks at {m}; {len(fl)} interleaved "
             "rounds of every loader and the floor; workers started by an untimed first epoch, "
             "which took " + ", ".join(f"{k} {v:.2f} s" for k, v in first.items())]  # fmt: skip
    return Result(rows, notes)

"""How close is the training reader to the JPEG-decode floor, where does its time go, and what
do workers and a pre-resized store change?

Iterates ``SA1BDataset`` + ``collate`` through a ``DataLoader`` (batch 8; W = 0, 2 fork and 2
spawn workers; and a store packed with ``--image-longest 1024``) on the run's packed store,
side by side with the parts of a sample (``decode_image`` alone into a reused buffer: the
floor; masks; ``training_sample``; ``__getitem__``; collate; collate + the shared-memory copy a
worker's queue makes). Workers are persistent and started by an untimed first epoch, so timed
epochs are steady state; first epochs are reported apart. What users run instead: peers.py.
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import (
    add_input_args,
    args_dict,
    environment,
    input_description,
    measure_side_by_side,
    p50,
    packed_store,
    print_header,
    print_table,
    source_tars,
    spread,
    summary_row,
    work_dir,
    write_results,
)
from torch.utils.data import DataLoader, Dataset, Subset

from sa1b_pack import pack
from sa1b_pack.torch import SA1BDataset, collate
from sa1b_pack.train.recipe import choose_masks, decode_image, training_sample

HEADERS = ("measure", "p50", "unit", "ratio", "n", "dominated by / notes")
MB = 1e6


# ---------------------------------------------------------------------------------------------
# Loaders


def make_loader(ds: Dataset, fn: Callable, batch: int, workers: int, context: str | None):
    """Persistent workers, so one untimed first epoch starts them and later epochs are steady."""
    return DataLoader(
        ds, batch_size=batch, collate_fn=fn, num_workers=workers, persistent_workers=workers > 0,
        multiprocessing_context=context if workers else None,
    )  # fmt: skip


def epoch(loader: DataLoader) -> float:
    """Iterate one epoch; the batches are received, not touched (as a trainer receives them).
    Returns seconds to the first batch."""
    t0 = time.perf_counter()
    first = None
    for _ in loader:
        first = first if first is not None else time.perf_counter() - t0
    return first or 0.0


def with_cpu(fn: Callable[[], Any], sink: list[float]) -> Callable[[], Any]:
    """``fn``, also appending the CPU seconds this process spent (all its threads) to sink."""

    def go() -> Any:
        c0 = time.process_time()
        out = fn()
        sink.append(time.process_time() - c0)
        return out

    return go


def first_epochs(loaders: dict[str, DataLoader]) -> dict[str, dict[str, float]]:
    """The untimed warm-up epoch of each loader, timed apart: worker start included."""
    out = {}
    for name, loader in loaders.items():
        t0 = time.perf_counter()
        first = epoch(loader)
        out[name] = {"first_batch_s": first, "epoch_s": time.perf_counter() - t0}
    return out


# ---------------------------------------------------------------------------------------------
# The parts of our sample, each over the whole epoch's samples, for the side-by-side group


def part_cases(
    ds: SA1BDataset, positions: Sequence[int], batch: int
) -> dict[str, Callable[[], Any]]:
    """The parts of an epoch's samples (``positions`` in ``ds``), each over the whole epoch."""
    store, recipe = ds.store, ds.recipe
    size, m = recipe.image_size, recipe.mask_size
    indices = [int(ds.index[p]) for p in positions]
    chosen = []
    for i in indices:
        s = store[i]
        rng = np.random.default_rng((recipe.seed, 0, i))
        passing = recipe.passing(s.predicted_iou, s.stability_score, s.area)
        chosen.append(choose_masks(passing, s.area, recipe, rng))
    image = np.ones((size, size, 3), np.uint8)  # reused, faulted in now
    masks = np.ones((max(map(len, chosen)), m, m), bool)
    items = [ds[p] for p in positions]
    batches = [items[b : b + batch] for b in range(0, len(items), batch)]

    def floor() -> None:
        for i in indices:
            s = store[i]
            decode_image(s.jpeg, s.height, s.width, size, image)

    def mask_part() -> None:
        for i, c in zip(indices, chosen, strict=True):
            store[i].masks(c, longest=m, pad=True, out=masks[: len(c)])

    def samples() -> None:
        for i in indices:
            training_sample(store, i, recipe)

    def getitems() -> None:
        for p in positions:
            ds[p]

    def collates() -> None:
        for b in batches:
            collate(b)

    def collate_share() -> None:
        for b in batches:
            for t in collate(b).values():
                t.share_memory_()  # what a worker's queue put does to every tensor it sends

    return {
        "floor": floor, "masks": mask_part, "training_sample": samples, "getitem": getitems,
        "collate": collates, "collate+share": collate_share,
    }  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Rows


def rows_for(
    sec: dict[str, list[float]],
    first: dict[str, dict[str, float]],
    cpu_w0: list[float],
    n: int,
    args: argparse.Namespace,
) -> list[list[Any]]:
    ms = {k: 1e3 * p50(v) / n for k, v in sec.items()}  # per sample
    rate = {k: n / p50(v) for k, v in sec.items() if " W=" in k}
    w0 = ms["ours W=0"]
    floor = ms["floor"]
    ts_rest = ms["training_sample"] - floor - ms["masks"]
    torch_wrap = ms["getitem"] - ms["training_sample"]
    loader_rest = w0 - ms["getitem"] - ms["collate"]
    ipc = ms["collate+share"] - ms["collate"]

    def pct(x: float) -> str:
        return f"{100 * x / w0:.0f}% of W=0"

    fork, spawn = first["ours W=2 fork"], first["ours W=2 spawn"]
    nr = args.rounds
    cores = p50(cpu_w0) / p50(sec["ours W=0"])
    s = args.image_size
    pre0, pre2 = rate.get("pre-resized W=0", np.nan), rate.get("pre-resized W=2 fork", np.nan)
    rows = [
        ["ours W=0", rate["ours W=0"], "samples/s", f"{w0 / floor:.2f}x the JPEG floor", nr,
         f"{w0:.1f} ms/sample; image {100 * floor / w0:.0f}%, masks "
         f"{100 * ms['masks'] / w0:.0f}%"],
        ["ours W=2 fork", rate["ours W=2 fork"], "samples/s",
         f"{rate['ours W=2 fork'] / rate['ours W=0']:.2f}x W=0", nr,
         f"CPU-bound: W=0 already uses {cores:.1f} cores (torch threads in collate, cv2); "
         "workers add the IPC copy + fresh pages"],
        ["ours W=2 spawn", rate["ours W=2 spawn"], "samples/s",
         f"{rate['ours W=2 spawn'] / rate['ours W=2 fork']:.2f}x fork", nr,
         f"steady state as fork; first epoch {spawn['epoch_s']:.1f} s (fork "
         f"{fork['epoch_s']:.1f} s): interpreter + torch + numba cache load per worker"],
        ["ours, pre-resized store W=0", pre0, "samples/s",
         f"{pre0 / rate['ours W=0']:.2f}x full-size store", nr,
         f"pack --image-longest {s}: decodes a {s} px q90 JPEG instead of the full one"],
        ["ours, pre-resized store W=2 fork", pre2, "samples/s", f"{pre2 / pre0:.2f}x W=0", nr,
         "IPC-bound: each sample's image + masks cross to the main process via /dev/shm"],
        ["JPEG floor: decode_image, out= reused", floor, "ms/sample", "ref floor", nr,
         f"simplejpeg DCT-scaled decode + cv2 bilinear resize + pad into ({s},{s},3)"],
        ["ours W=0 per sample (1 / samples/s)", w0, "ms/sample",
         f"{w0 / floor:.2f}x floor", nr, "sum of the rows below"],
        ["  image: decode_image", floor, "ms/sample", pct(floor), nr, "the floor itself"],
        ["  masks: s.masks(idx, longest, pad, out=)", ms["masks"], "ms/sample",
         pct(ms["masks"]), nr, "parse chosen COCO strings + nearest decode to the low-res frame"],
        ["  rest of training_sample", ts_rest, "ms/sample", pct(ts_rest), nr,
         f"filters, draw, boxes/points, fresh ({s},{s},3) + (K,m,m) arrays; a difference "
         "of medians, so +-0.3 ms is noise"],
        ["  torch wrap (__getitem__)", torch_wrap, "ms/sample", pct(torch_wrap), nr,
         "from_numpy, permute, astype(float32) of per-mask fields; difference, noisy as above"],
        ["  collate", ms["collate"], "ms/sample", pct(ms["collate"]), nr,
         "torch.stack of images + zero-padded (B,K,m,m) masks: copies into fresh memory"],
        ["  DataLoader W=0 overhead", loader_rest, "ms/sample", pct(loader_rest), nr,
         "sampler, fetcher; a difference, noisy as above"],
        ["IPC: collate + share_memory_ - collate", ipc, "ms/sample",
         f"{ipc / floor:.2f}x floor", nr,
         f"the worker's queue put copies the {3 * s * s / MB:.1f} MB image + K*m*m mask bytes "
         "per sample into fresh /dev/shm pages (fork and spawn alike)"],
    ]  # fmt: skip
    return [r for r in rows if not (r[0].startswith("ours, pre-resized") and np.isnan(r[1]))]


def summary(rows: list[list[Any]]) -> list[dict[str, Any]]:
    """The headline rows (loaders and the floor), in the run's summary schema."""
    return [
        summary_row(measure, value, unit, n=n, ratio=ratio, dominated=note)
        for measure, value, unit, ratio, n, note in rows
        if unit == "samples/s" or measure.startswith("JPEG floor")
    ]


# ---------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_input_args(p)
    p.add_argument("--samples", type=int, default=48, help="images per epoch (seeded draw)")
    p.add_argument("--rounds", type=int, default=5, help="timed epochs, median reported")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--image-size", type=int, default=1024)
    p.add_argument("--mask-size", type=int, default=256)
    p.add_argument("--resized-store", type=Path, help="the shards packed --image-longest SIZE")
    p.add_argument("--no-resized", action="store_true", help="skip the pre-resized store rows")
    args = p.parse_args(argv)
    if args.smoke:
        args.samples, args.rounds, args.image_size, args.mask_size = 6, 1, 64, 16
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    env = environment()
    env.update(torch=torch.__version__, torch_threads=torch.get_num_threads())
    tars = source_tars(args)
    print_header(f"bench_loader: {input_description(args, tars)}", env)
    print(f"# torch {env['torch']}, {env['torch_threads']} intra-op threads in the main process")
    with work_dir(args.store) as tmp:
        work = Path(tmp)
        resized = args.resized_store
        if resized is None and not args.no_resized:
            resized = work / "resized"
            print(f"packing a pre-resized store (--image-longest {args.image_size}) ...")
            pack(tars[0].parent, resized, [int(p.stem[3:]) for p in tars], progress=False,
                 image_longest=args.image_size)  # fmt: skip
        recipe = dict(
            image_size=args.image_size, mask_size=args.mask_size, max_masks=64,
            min_predicted_iou=0.88, min_stability_score=0.95, min_area=100,
            mask_sampling="random", seed=args.seed,
        )  # fmt: skip
        ds = SA1BDataset(packed_store(args, tars, work), **recipe)
        positions = spread(len(ds), args.samples, args.seed)
        n, b = len(positions), args.batch
        sub = Subset(ds, positions)
        training_sample(ds.store, int(ds.index[0]), ds.recipe)  # numba kernels before any fork
        loaders = {
            "ours W=0": make_loader(sub, collate, b, 0, None),
            "ours W=2 fork": make_loader(sub, collate, b, 2, "fork"),
            "ours W=2 spawn": make_loader(sub, collate, b, 2, "spawn"),
        }
        if resized is not None:
            sub_resized = Subset(SA1BDataset(resized, **recipe), positions)
            loaders["pre-resized W=0"] = make_loader(sub_resized, collate, b, 0, None)
            loaders["pre-resized W=2 fork"] = make_loader(sub_resized, collate, b, 2, "fork")
        print("first epochs (worker start) ...", flush=True)
        first = first_epochs(loaders)
        print(f"{args.rounds} rounds ...", flush=True)
        cases = {k: (lambda lo=lo: epoch(lo)) for k, lo in loaders.items()}
        cpu_w0: list[float] = []
        cases["ours W=0"] = with_cpu(cases["ours W=0"], cpu_w0)
        sec = measure_side_by_side({**cases, **part_cases(ds, positions, b)}, args.rounds, 0)
        rows = rows_for(sec, first, cpu_w0, n, args)
        drawn = float(np.mean([len(ds[p]["masks"]) for p in positions[:8]]))
        per_image = ds.store.num_masks / len(ds.store)
        del loaders, cases, ds, sub
        gc.collect()  # shuts the persistent workers down before the folder goes
    print()
    table = print_table(HEADERS, rows)
    starts = [f"{k} {v['epoch_s']:.2f} s (1st batch {v['first_batch_s']:.2f} s)"
              for k, v in first.items()]  # fmt: skip
    notes = [
        f"{n} images per epoch, ~{drawn:.0f} masks drawn per sample (of {per_image:.0f}), "
        f"batch {b}; median of {args.rounds} side-by-side rounds (loaders + parts); persistent "
        "workers started by an untimed first epoch; page cache warm. First epochs: "
        + ", ".join(starts)
    ]
    print("\n" + notes[0])
    print(f"allocator: {env['allocator']}")
    result = {
        "environment": env,
        "args": args_dict(args),
        "rows": [dict(zip(HEADERS, r, strict=True)) for r in rows],
        "summary": summary(rows),
        "notes": notes,
        "first_epochs": first,
        "raw_seconds": {"rounds": sec, "ours_w0_cpu": cpu_w0},
        "samples": n,
        "table": table,
    }
    name = "bench_loader-smoke" if args.smoke else "bench_loader"
    path = write_results(name, result, args.results)
    print(f"results: {path}")
    return result


if __name__ == "__main__":
    main()

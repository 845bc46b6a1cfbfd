"""What does each way of reading a sample cost, in sequential and random order, page cache warm
and cold?

Five access patterns over the same samples of one packed store: ``store[i]`` + metadata fields
only, + ``masks()`` (all, full size, into a reused buffer), + ``masks(64 sampled, longest=1024,
pad=True)``, + ``image()``, and the whole training recipe (``training_sample``: image 1024,
64 masks at 256). Each is timed per call, p50/p95/p99, with the samples visited in index order
and in a random permutation; warm after an untimed pass, cold with the store's files evicted
(this process's maps madvised DONTNEED, then posix_fadvise DONTNEED) before every call.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from common import (
    add_input_args,
    args_dict,
    environment,
    evict,
    flat_view,
    input_description,
    latency_row,
    p50,
    packed_store,
    print_header,
    print_summary,
    source_tars,
    spread,
    store_files,
    work_dir,
    write_results,
)

from sa1b_pack import Store, open_store
from sa1b_pack.train.recipe import Recipe, training_sample

Op = Callable[[int], Any]


def patterns(store: Store, indices: Sequence[int], k: int, longest: int, recipe: Recipe) -> dict:
    """name -> (op(i), what dominates it); buffers reused and faulted in up front."""
    rng = np.random.default_rng(0)
    picks = {i: rng.choice(len(store[i]), size=min(k, len(store[i])), replace=False)
             for i in indices}  # fmt: skip
    size = max(max(len(store[i]), k) * store[i].height * store[i].width for i in indices)
    buffer = np.empty(max(size, k * longest * longest), np.uint8)
    buffer.fill(1)

    def meta(i: int) -> None:
        s = store[i]
        _ = (s.image_id, s.bbox, s.area, s.predicted_iou)

    def masks(i: int) -> None:
        s = store[i]
        s.masks(out=flat_view(buffer, (len(s), s.height, s.width)))

    def sampled(i: int) -> None:
        pick = picks[i]
        store[i].masks(pick, longest=longest, pad=True, out=flat_view(buffer, (len(pick),
                       longest, longest)))  # fmt: skip

    return {
        "store[i] + 4 metadata fields": (
            meta, "Python calls: locate the part, Sample(), 4 column views"),
        "store[i] + masks(), all, full size": (
            masks, "output writes, (N, H, W) uint8: see limits' memset"),
        f"store[i] + masks({k} sampled, longest={longest})": (
            sampled, f"parse {k} COCO strings + nearest decode to {longest}x{longest} padded"),
        "store[i] + image()": (
            lambda i: store[i].image(), "full-size JPEG decode (libjpeg-turbo)"),
        "training recipe (training_sample)": (
            lambda i: training_sample(store, i, recipe),
            "DCT-scaled JPEG decode + resize to 1024; masks at 256 are ~2%"),
    }  # fmt: skip


def time_pass(op: Op, order: Sequence[int], cold: bool, files: list[Path]) -> list[float]:
    """Seconds per call of ``op`` on every sample of ``order``; cold: the store's files are
    evicted before each call (so readahead cannot help either order)."""
    times = []
    clock = time.perf_counter
    for i in order:
        if cold:
            evict(files)
        t0 = clock()
        op(i)
        times.append(clock() - t0)
    return times


def run(store: Store, indices: Sequence[int], args: argparse.Namespace) -> tuple[dict, dict]:
    """Per pattern, its own passes (a pattern is a workload): warm sequential, warm random,
    cold sequential, cold random. Metadata calls are ~µs, so they get 10x the passes."""
    recipe = Recipe(
        image_size=args.image_size, mask_size=args.mask_size, max_masks=args.masks,
        min_predicted_iou=0.88, min_stability_score=0.95, min_area=100, seed=args.seed,
    )  # fmt: skip
    table = patterns(store, indices, args.masks, args.image_size, recipe)
    orders = {
        "sequential": list(indices),
        "random": np.random.default_rng(args.seed).permutation(indices).tolist(),
    }
    files = store_files(store.root)
    sec: dict[str, list[float]] = {}
    for n, (name, (op, _)) in enumerate(table.items()):
        print(f"{name} ...", flush=True)
        passes = args.passes * (10 if n == 0 else 1)
        time_pass(op, orders["sequential"], cold=False, files=files)  # untimed: warm it all
        for cache in ("warm", "cold"):
            for order_name, order in orders.items():
                got = []
                for _ in range(passes if cache == "warm" else 1):
                    got += time_pass(op, order, cache == "cold", files)
                sec[f"{name} | {order_name} | {cache}"] = got
    return sec, {name: note for name, (_, note) in table.items()}


def rows(sec: dict[str, list[float]], notes: dict[str, str]) -> list[dict[str, Any]]:
    out = []
    for key, seconds in sec.items():
        name, order, cache = key.split(" | ")
        ref = p50(sec[f"{name} | sequential | warm"])
        ratio = "ref" if (order, cache) == ("sequential", "warm") else f"{p50(seconds) / ref:.2f}x"
        dominated = notes[name]
        if cache == "cold":
            extra = 1e3 * (p50(seconds) - p50(sec[f"{name} | {order} | warm"]))
            dominated = f"{extra:+.2f} ms vs warm: page faults, reads from disk (or host cache)"
        out.append(latency_row(f"{name}, {order}, {cache}", seconds, ratio=ratio,
                               dominated=dominated))  # fmt: skip
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_input_args(p)
    p.add_argument("--samples", type=int, default=48, help="samples visited (seeded draw)")
    p.add_argument("--passes", type=int, default=2, help="timed warm passes per order")
    p.add_argument("--masks", type=int, default=64, help="sampled masks (k)")
    p.add_argument("--image-size", type=int, default=1024)
    p.add_argument("--mask-size", type=int, default=256)
    args = p.parse_args(argv)
    if args.smoke:
        args.samples, args.passes, args.masks, args.image_size, args.mask_size = 4, 1, 8, 64, 16
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    env = environment()
    tars = source_tars(args)
    print_header(f"access: {input_description(args, tars)}", env)
    with work_dir(args.store) as tmp:
        store = open_store(packed_store(args, tars, Path(tmp)))
        with_masks = [i for i in range(len(store)) if len(store[i]) > 0]
        indices = [with_masks[j] for j in spread(len(with_masks), args.samples, args.seed)]
        sec, notes = run(store, indices, args)
        summary = rows(sec, notes)
        del store
    print()
    table = print_summary(summary)
    text = (
        f"{len(indices)} samples with masks; warm: {args.passes} timed passes per order after "
        "an untimed one; cold: one pass per order, the store's files evicted before every call "
        "(madvise + posix_fadvise DONTNEED: cold for this VM's page cache; the host may still "
        "cache the disk, see limits' cold read), so readahead helps neither order. Each "
        "pattern runs alone, metadata with 10x the passes. Masks into a reused buffer; "
        "image() and the recipe allocate their outputs."
    )
    print("\n" + text)
    print(f"allocator: {env['allocator']}")
    result = {
        "environment": env,
        "args": args_dict(args),
        "summary": summary,
        "notes": [text],
        "raw_seconds": sec,
        "table": table,
    }
    path = write_results("access-smoke" if args.smoke else "access", result, args.results)
    print(f"results: {path}")
    return result


if __name__ == "__main__":
    main()

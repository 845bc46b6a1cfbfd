"""Does the training reader feed SAM training faster than the usual way, and how close is it to
the JPEG-decode floor?

Packs synthetic full-size shards (1500 px short side, ~100 masks per image) and iterates
``SA1BDataset`` + ``collate`` through a ``DataLoader`` (batch 8, W = 0 and 2 fork workers, and
2 spawn workers) against the Dataset people write today over extracted files (PIL + json +
pycocotools of every mask + PIL resizes). Workers are persistent and started by an untimed
first epoch, so timed epochs are steady state; first epochs are reported apart. Two side-by-
side groups: ours (loaders + the parts of a sample, for the floor ratio), then ours vs the
baseline (for the speedup). The floor is ``decode_image`` alone into a reused buffer.
"""

from __future__ import annotations

import argparse
import gc
import json
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bench_store import extract, read_source
from common import (
    environment,
    measure_side_by_side,
    p50,
    print_header,
    print_table,
    synth_cached,
    write_results,
)
from PIL import Image
from pycocotools import mask as mask_util
from torch.utils.data import DataLoader, Dataset

from sa1b_pack import pack
from sa1b_pack.torch import SA1BDataset, collate
from sa1b_pack.training import choose_masks, decode_image, training_sample

HEADERS = ("measure", "p50", "unit", "ratio", "n", "dominated by / notes")
MB = 1e6


class BaselineDataset(Dataset):
    """The usual SAM fine-tuning Dataset over extracted files: PIL, json, pycocotools decode of
    every mask, filter, draw, PIL resizes. ``keys`` seed the draw as ours does, so both pick the
    same masks. With W = 0, ``parts`` collects seconds per step (workers keep their own copy)."""

    def __init__(self, files: Sequence[tuple[Path, Path]], keys: Sequence[int], recipe: Any):
        self.files, self.keys, self.r = list(files), list(keys), recipe
        self.epoch = 0
        self.parts: dict[str, list[float]] = {}

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        r, (jpg, js) = self.r, self.files[i]
        t0 = time.perf_counter()
        with Image.open(jpg) as im:
            image = im.convert("RGB")
        with open(js, "rb") as f:
            record = json.load(f)
        t1 = time.perf_counter()
        anns = record["annotations"]
        height, width = record["image"]["height"], record["image"]["width"]
        masks = mask_util.decode([a["segmentation"] for a in anns])  # (H, W, N), all of them
        t2 = time.perf_counter()
        keep = np.array(
            [
                j
                for j, a in enumerate(anns)
                if a["predicted_iou"] >= r.min_predicted_iou
                and a["stability_score"] >= r.min_stability_score
                and a["area"] >= r.min_area
            ],
            dtype=np.int64,
        )
        rng = np.random.default_rng((r.seed, self.epoch, self.keys[i]))
        if len(keep) > r.max_masks:
            chosen = rng.choice(keep, size=r.max_masks, replace=False)
        else:
            chosen = rng.permutation(keep)
        h, w = sam_shape(height, width, r.image_size)
        padded = np.zeros((r.image_size, r.image_size, 3), np.uint8)
        padded[:h, :w] = np.asarray(image.resize((w, h), Image.Resampling.BILINEAR))
        t3 = time.perf_counter()
        mh, mw = sam_shape(height, width, r.mask_size)
        low = np.zeros((len(chosen), r.mask_size, r.mask_size), bool)
        for k, j in enumerate(chosen):
            small = Image.fromarray(masks[:, :, j]).resize((mw, mh), Image.Resampling.NEAREST)
            low[k, :mh, :mw] = np.asarray(small)
        t4 = time.perf_counter()
        sx, sy = w / width, h / height
        xywh = np.array([anns[j]["bbox"] for j in chosen], np.float64).reshape(-1, 4)
        boxes = np.stack(
            [xywh[:, 0] * sx, xywh[:, 1] * sy, (xywh[:, 0] + xywh[:, 2]) * sx,
             (xywh[:, 1] + xywh[:, 3]) * sy], axis=1,
        )  # fmt: skip
        points = np.array([anns[j]["point_coords"][0] for j in chosen]).reshape(-1, 2) * [sx, sy]
        steps = {
            "PIL open+convert, json.load": t1 - t0,
            "pycocotools decode all": t2 - t1,
            "filter, draw, PIL image resize+pad": t3 - t2,
            "PIL mask resizes": t4 - t3,
        }
        for name, dt in steps.items():
            self.parts.setdefault(name, []).append(dt)
        return {
            "image": torch.from_numpy(padded).permute(2, 0, 1),
            "masks": torch.from_numpy(low),
            "boxes": torch.from_numpy(boxes.astype(np.float32)),
            "points": torch.from_numpy(points.astype(np.float32)),
            "mask_ids": torch.tensor([anns[j]["id"] for j in chosen], dtype=torch.int64),
        }


def sam_shape(height: int, width: int, longest: int) -> tuple[int, int]:
    """segment_anything's ResizeLongestSide.get_preprocess_shape, as users copy it."""
    scale = longest * 1.0 / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def baseline_collate(batch: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack images, zero-pad masks/boxes/points to the batch's largest K, plus a valid mask."""
    k = max(len(s["masks"]) for s in batch)
    size = batch[0]["masks"].shape[1:]
    out = {
        "masks": torch.zeros((len(batch), k, *size), dtype=torch.bool),
        "boxes": torch.zeros((len(batch), k, 4)),
        "points": torch.zeros((len(batch), k, 2)),
        "mask_ids": torch.zeros((len(batch), k), dtype=torch.int64),
        "mask_valid": torch.zeros((len(batch), k), dtype=torch.bool),
    }
    for b, s in enumerate(batch):
        n = len(s["masks"])
        for f in ("masks", "boxes", "points", "mask_ids"):
            out[f][b, :n] = s[f]
        out["mask_valid"][b, :n] = True
    out["image"] = torch.stack([s["image"] for s in batch])
    return out


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


def part_cases(ds: SA1BDataset, batch: int) -> dict[str, Callable[[], Any]]:
    store, recipe = ds.store, ds.recipe
    size, m = recipe.image_size, recipe.mask_size
    indices = [int(i) for i in ds.index]
    chosen = []
    for i in indices:
        s = store[i]
        rng = np.random.default_rng((recipe.seed, 0, i))
        passing = recipe.passing(s.predicted_iou, s.stability_score, s.area)
        chosen.append(choose_masks(passing, s.area, recipe, rng))
    image = np.ones((size, size, 3), np.uint8)  # reused, faulted in now
    masks = np.ones((max(map(len, chosen)), m, m), bool)
    items = [ds[i] for i in range(len(ds))]
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
        for i in range(len(ds)):
            ds[i]

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


def check_outputs(ds: SA1BDataset, base: BaselineDataset) -> dict[str, Any]:
    """Untimed: does the baseline produce what ours does for sample 0 (same masks drawn)?"""
    ours, theirs = ds[0], base[0]
    img_diff = (ours["image"].float() - theirs["image"].float()).abs()
    out = {
        "mask_ids_equal": torch.equal(ours["mask_ids"], theirs["mask_ids"]),
        "mask_pixels": int(ours["masks"].numel()),
        "masks_differing_pixels": -1,
        "boxes_max_abs_diff": float("nan"),
        "image_mean_abs_diff": float(img_diff.mean()),
    }
    if out["mask_ids_equal"]:
        out["masks_differing_pixels"] = int((ours["masks"] != theirs["masks"]).sum())
        out["boxes_max_abs_diff"] = float((ours["boxes"] - theirs["boxes"]).abs().max())
    return out


# ---------------------------------------------------------------------------------------------
# Rows


def rows_for(
    ours: dict[str, list[float]],
    vs: dict[str, list[float]],
    first: dict[str, dict[str, float]],
    base_parts: dict[str, list[float]],
    cpu_w0: list[float],
    n: int,
    n_base: int,
    args: argparse.Namespace,
) -> list[list[Any]]:
    ms = {k: 1e3 * p50(v) / n for k, v in ours.items()}  # per sample, group 1
    rate = {k: n / p50(v) for k, v in ours.items() if k.startswith("ours")}
    vs_rate = {k: (n_base if k.startswith("baseline") else n) / p50(v) for k, v in vs.items()}
    w0 = ms["ours W=0"]
    floor = ms["floor"]
    ts_rest = ms["training_sample"] - floor - ms["masks"]
    torch_wrap = ms["getitem"] - ms["training_sample"]
    loader_rest = w0 - ms["getitem"] - ms["collate"]
    ipc = ms["collate+share"] - ms["collate"]

    def pct(x: float) -> str:
        return f"{100 * x / w0:.0f}% of W=0"

    r0 = vs_rate["ours W=0"] / vs_rate["baseline W=0"]
    r2 = vs_rate["ours W=2 fork"] / vs_rate["baseline W=2 fork"]
    bp = {k: 1e3 * p50(v) for k, v in base_parts.items()}
    b_total = sum(bp.values())
    top = max(bp, key=bp.get) if bp else "-"
    share = f"{top} {100 * bp[top] / b_total:.0f}%" if bp else "-"
    fork, spawn = first["ours W=2 fork"], first["ours W=2 spawn"]
    nr, nb = args.rounds, args.baseline_rounds
    cores = p50(cpu_w0) / p50(ours["ours W=0"])
    s = args.image_size
    return [
        ["ours W=0", rate["ours W=0"], "samples/s", f"{r0:.1f}x baseline W=0", nr,
         f"{w0:.1f} ms/sample = {w0 / floor:.2f}x the JPEG floor; image "
         f"{100 * floor / w0:.0f}%, masks {100 * ms['masks'] / w0:.0f}%; target >= 25x"],
        ["ours W=2 fork", rate["ours W=2 fork"], "samples/s",
         f"{r2:.1f}x baseline W=2; {rate['ours W=2 fork'] / rate['ours W=0']:.2f}x W=0", nr,
         f"CPU-bound: W=0 already uses {cores:.1f} cores (torch threads in collate, cv2); "
         "workers add the IPC copy + fresh pages"],
        ["ours W=2 spawn", rate["ours W=2 spawn"], "samples/s",
         f"{rate['ours W=2 spawn'] / rate['ours W=2 fork']:.2f}x fork", nr,
         f"steady state as fork; first epoch {spawn['epoch_s']:.1f} s (fork "
         f"{fork['epoch_s']:.1f} s): interpreter + torch + numba cache load per worker"],
        ["ours, pre-resized store W=0", vs_rate["pre-resized W=0"], "samples/s",
         f"{vs_rate['pre-resized W=0'] / vs_rate['baseline W=0']:.1f}x baseline W=0", nb,
         f"pack --image-longest {s}: decodes a {s} px q90 JPEG instead of the full one"],
        ["ours, pre-resized store W=2 fork", vs_rate["pre-resized W=2 fork"], "samples/s",
         f"{vs_rate['pre-resized W=2 fork'] / vs_rate['baseline W=2 fork']:.1f}x baseline W=2",
         nb, "IPC-bound: each sample's image + masks cross to the main process via /dev/shm"],
        ["baseline W=0", vs_rate["baseline W=0"], "samples/s", "ref", nb,
         f"{n_base} of {n} samples per epoch; {b_total:.0f} ms/sample, {share}"],
        ["baseline W=2 fork", vs_rate["baseline W=2 fork"], "samples/s",
         f"ref; {vs_rate['baseline W=2 fork'] / vs_rate['baseline W=0']:.2f}x W=0", nb,
         f"{n_base} of {n} samples per epoch; fresh pages for (H,W,N) masks in every worker"],
        ["JPEG floor: decode_image, out= reused", floor, "ms/sample", "ref floor", nr,
         f"simplejpeg DCT-scaled decode + cv2 bilinear resize + pad into ({s},{s},3)"],
        ["ours W=0 per sample (1 / samples/s)", w0, "ms/sample",
         f"{w0 / floor:.2f}x floor (target <= 1.3x)", nr, "sum of the rows below"],
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


# ---------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shards", type=int, default=2)
    p.add_argument("--images", type=int, default=24, help="images per shard (6 batches of 8)")
    p.add_argument("--rounds", type=int, default=7, help="timed epochs of our group")
    p.add_argument("--baseline-rounds", type=int, default=3, help="timed epochs vs baseline")
    p.add_argument("--baseline-samples", type=int, default=16, help="baseline epoch size")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--image-size", type=int, default=1024)
    p.add_argument("--mask-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", type=Path, default=None, help="synthetic shards cache folder")
    p.add_argument("--results", type=Path, default=None, help="results folder")
    p.add_argument("--smoke", "--quick", action="store_true", help="tiny images, for tests")
    args = p.parse_args(argv)
    if args.smoke:
        args.images, args.rounds, args.baseline_rounds = 3, 1, 1
        args.image_size, args.mask_size = 64, 16
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    env = environment()
    env.update(torch=torch.__version__, torch_threads=torch.get_num_threads())
    size = "small synthetic images (smoke)" if args.smoke else "full-size synthetic SA-1B"
    print_header(f"bench_loader: {args.shards} shards x {args.images} images, {size}", env)
    print(f"# torch {env['torch']}, {env['torch_threads']} intra-op threads in the main process")
    tars = synth_cached(
        args.shards, args.images, small=args.smoke, seed=args.seed, cache=args.cache
    )
    with tempfile.TemporaryDirectory(prefix="sa1b-loader-") as tmp:
        work = Path(tmp)
        indices = [int(p.stem[3:]) for p in tars]
        pack(tars[0].parent, work / "store", indices, progress=False)
        pack(tars[0].parent, work / "resized", indices, progress=False,
             image_longest=args.image_size)  # fmt: skip
        files = extract(read_source(tars), work / "extracted")  # untimed, as a user has them
        ds = SA1BDataset(
            work / "store", image_size=args.image_size, mask_size=args.mask_size, max_masks=64,
            min_predicted_iou=0.88, min_stability_score=0.95, min_area=100,
            mask_sampling="random", seed=args.seed,
        )  # fmt: skip
        ds_resized = SA1BDataset(work / "resized", **{
            k: getattr(ds.recipe, k) for k in ("image_size", "mask_size", "max_masks",
            "min_predicted_iou", "min_stability_score", "min_area", "mask_sampling", "seed")
        })  # fmt: skip
        n = len(ds)
        keys = [int(i) for i in ds.index[: args.baseline_samples]]
        base = BaselineDataset([files[ds.store[i].image_id] for i in keys], keys, ds.recipe)
        n_base = len(base)
        check = check_outputs(ds, base)  # also loads numba kernels before any fork
        b = args.batch
        ours = {
            "ours W=0": make_loader(ds, collate, b, 0, None),
            "ours W=2 fork": make_loader(ds, collate, b, 2, "fork"),
            "ours W=2 spawn": make_loader(ds, collate, b, 2, "spawn"),
        }
        resized = {
            "pre-resized W=0": make_loader(ds_resized, collate, b, 0, None),
            "pre-resized W=2 fork": make_loader(ds_resized, collate, b, 2, "fork"),
        }
        baseline = {
            "baseline W=0": make_loader(base, baseline_collate, b, 0, None),
            "baseline W=2 fork": make_loader(base, baseline_collate, b, 2, "fork"),
        }
        print("first epochs (worker start) ...", flush=True)
        first = first_epochs({**ours, **resized, **baseline})
        print(f"ours, {args.rounds} rounds ...", flush=True)
        cases = {k: (lambda lo=lo: epoch(lo)) for k, lo in ours.items()}
        cpu_w0: list[float] = []
        cases["ours W=0"] = with_cpu(cases["ours W=0"], cpu_w0)
        group1 = measure_side_by_side({**cases, **part_cases(ds, b)}, args.rounds, warmup=0)
        print(f"ours vs baseline, {args.baseline_rounds} rounds ...", flush=True)
        base.parts.clear()  # keep only the timed W=0 epochs' steps
        pairs = {k: (lambda lo=lo: epoch(lo)) for k, lo in {**ours, **resized, **baseline}.items()
                 if "spawn" not in k}  # fmt: skip
        group2 = measure_side_by_side(pairs, args.baseline_rounds, warmup=0)
        rows = rows_for(group1, group2, first, base.parts, cpu_w0, n, n_base, args)
        drawn = float(np.mean([len(ds[i]["masks"]) for i in range(min(n, 8))]))
        per_image = ds.store.num_masks / len(ds.store)
        base_parts = dict(base.parts)
        del ours, resized, baseline, cases, pairs, ds, ds_resized, base
        gc.collect()  # shuts the persistent workers down before the folder goes
    print()
    table = print_table(HEADERS, rows)
    print(
        f"\n{n} images, ~{drawn:.0f} masks drawn per sample (of {per_image:.0f}), batch {b}; "
        f"per epoch: ours {n} samples, baseline the first {n_base}. Medians of {args.rounds} "
        f"side-by-side rounds (ours: loaders + parts) and {args.baseline_rounds} (ours vs "
        "baseline: the speedups); persistent workers started by an untimed first epoch; "
        "page cache warm."
    )
    starts = [f"{k} {v['epoch_s']:.2f} s (1st batch {v['first_batch_s']:.2f} s)"
              for k, v in first.items()]  # fmt: skip
    print("first epochs: " + ", ".join(starts))
    print(
        f"check vs baseline on sample 0: same masks drawn={check['mask_ids_equal']}, "
        f"mask pixels differing {check['masks_differing_pixels']} of {check['mask_pixels']}, "
        f"boxes max |diff| {check['boxes_max_abs_diff']:.2g}, image mean |diff| "
        f"{check['image_mean_abs_diff']:.2f} (PIL vs libjpeg DCT scaling + cv2)"
    )
    print(f"allocator: {env['allocator']}")
    result = {
        "environment": env,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "rows": [dict(zip(HEADERS, r, strict=True)) for r in rows],
        "check": check,
        "first_epochs": first,
        "raw_seconds": {
            "ours": group1,
            "vs_baseline": group2,
            "baseline_parts": base_parts,
            "ours_w0_cpu": cpu_w0,
        },
        "samples": {"ours": n, "baseline": n_base},
        "table": table,
    }
    name = "bench_loader-smoke" if args.smoke else "bench_loader"
    path = write_results(name, result, args.results)
    print(f"results: {path}")
    return result


if __name__ == "__main__":
    main()

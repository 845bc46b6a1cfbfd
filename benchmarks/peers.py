"""How does sa1b_pack compare with what a user would pick instead, on the same training recipe?

Recipe: image 1024 (padded), up to 64 masks sampled at 256, quality filters, batch 4. Peers,
all on the same images and drawing the same masks (checked): the seed-style reader (extracted
files, PIL, json, pycocotools decode of all masks, then sample), the seed's naive tar mode
(``getmember`` per item), WebDataset streaming tars (sequential only), LitData holding the
JPEG + JSON bytes, and sa1b_pack's ``SA1BDataset``. Samples/s through a DataLoader with 0 and 2
(fork, persistent) workers, every peer interleaved round by round.
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import tarfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from baselines import extract, key_ordered_shard, member_key, read_source
from common import (
    add_input_args,
    args_dict,
    environment,
    input_description,
    latency_row,
    measure_side_by_side,
    p50,
    packed_store,
    print_header,
    print_summary,
    source_tars,
    summary_row,
    work_dir,
    write_results,
)
from peer_datasets import (
    NaiveTar,
    SeedFiles,
    WdsRecipe,
    collate,
    litdata_dataset,
    litdata_write,
    webdataset_pipeline,
)
from torch.utils.data import DataLoader, Dataset, RandomSampler, Subset

from sa1b_pack.codec.jpeg import decode_image
from sa1b_pack.torch import SA1BDataset
from sa1b_pack.torch import collate as ours_collate

OURS, SEED = "sa1b_pack", "seed-style files"
HAVE = {m: importlib.util.find_spec(m) is not None for m in ("webdataset", "litdata")}
WHY_NOT_LITDATA = (
    "litdata requires torchvision, and pip resolves a CUDA build that fails to import beside "
    "the CPU torch 2.13 (operator torchvision::nms does not exist; litdata never imports it "
    "for raw bytes, so `pip install litdata && pip uninstall torchvision` runs it); MosaicML "
    "Streaming pulls the same torchvision plus transformers and cloud SDKs"
)


def loader(ds: Dataset, fn: Callable, batch: int, workers: int, seed: int) -> DataLoader:
    """Map-style: random order (seeded); iterable: the dataset's own order. Fork workers:
    sa1b_pack's persistent (an untimed epoch starts them; its epochs are ~0.1 s), the peers'
    started by each epoch, PyTorch's default (~50 ms against epochs of seconds)."""
    sampler = None
    if not isinstance(ds, torch.utils.data.IterableDataset):
        sampler = RandomSampler(ds, generator=torch.Generator().manual_seed(seed))
    persistent = workers > 0 and isinstance(ds, Subset)
    return DataLoader(
        ds, batch_size=batch, sampler=sampler, collate_fn=fn, num_workers=workers,
        persistent_workers=persistent, multiprocessing_context="fork" if workers else None,
    )  # fmt: skip


def epoch(lo: DataLoader, seen: dict[int, list[int]] | None = None) -> None:
    """One epoch; with ``seen``, record each image's drawn mask ids (for the check)."""
    for batch in lo:
        if seen is not None:
            valid = batch.get("mask_valid")
            for b, image_id in enumerate(batch["image_id"].tolist()):
                ids = batch["mask_ids"][b]
                seen[image_id] = (ids[valid[b]] if valid is not None else ids).tolist()


def choose(ds: SA1BDataset, samples: int) -> list[int]:
    """Positions in ``ds`` of the first ``samples / shards`` eligible images of each shard."""
    store, per = ds.store, max(1, samples // len(ds.store.shards))
    taken: dict[str, int] = {}
    out = []
    for pos, i in enumerate(ds.index.tolist()):
        shard = store[i].shard
        if taken.get(shard, 0) < per:
            taken[shard] = taken.get(shard, 0) + 1
            out.append(pos)
    return out


def tar_index_costs(tar: Path, lookups: int, seed: int) -> dict[str, Any]:
    """On a full source shard: the first ``getmember`` (reads every header) and later lookups."""
    with tarfile.open(tar, "r:*") as t:
        names = [n for n in t.getnames() if member_key(n)]
    t0 = time.perf_counter()
    with tarfile.open(tar, "r:*") as t:
        t.getmember(names[0])
        first = time.perf_counter() - t0
        rng = random.Random(seed)
        each = []
        for name in (rng.choice(names) for _ in range(lookups)):
            t1 = time.perf_counter()
            t.getmember(name)
            each.append(time.perf_counter() - t1)
    return {"members": len(names), "first_s": first, "lookup_s": each}


def build(args: argparse.Namespace, tars: list[Path], work: Path) -> tuple[dict, dict, dict]:
    """The peers' datasets over the same images (untimed preparation); notes on each."""
    ds = SA1BDataset(
        packed_store(args, tars, work), image_size=args.image_size, mask_size=args.mask_size,
        max_masks=64, min_predicted_iou=0.88, min_stability_score=0.95, min_area=100,
        mask_sampling="random", seed=args.seed,
    )  # fmt: skip
    positions = choose(ds, args.samples)
    keys = [int(ds.index[p]) for p in positions]
    ids = {ds.store[k].image_id: k for k in keys}
    source = read_source(tars, set(ids))
    files = extract(source, work / "extracted")
    # Small shards of the chosen samples, each source shard's in two halves (so that 2 workers
    # have shards to stream even from one source shard): WebDataset's and the naive tar's.
    by_shard: dict[str, list] = {}
    for image_id, k in ids.items():
        by_shard.setdefault(ds.store[k].shard, []).append(source[image_id])
    shard_of = {}
    for name, samples in sorted(by_shard.items()):
        half = max(1, len(samples) // 2)
        for part, chunk in (("a", samples[:half]), ("b", samples[half:])):
            if chunk:
                path = key_ordered_shard(chunk, work / "wds" / f"{name}{part}.tar")
                shard_of.update({s.image_id: path for s in chunk})
    shards = sorted(set(shard_of.values()))
    order = list(ids)
    datasets: dict[str, Any] = {
        OURS: Subset(ds, positions),
        SEED: SeedFiles([files[i] for i in order], [ids[i] for i in order], ds.recipe),
        "naive tar": NaiveTar([(shard_of[i], f"sa_{i}") for i in order],
                              [ids[i] for i in order], ds.recipe),
    }  # fmt: skip
    notes = {
        OURS: "SA1BDataset over the packed store, random order",
        SEED: "extracted files, random order",
        "naive tar": "getmember + extractfile per item on small shards, random order",
    }
    if HAVE["webdataset"]:
        datasets["WebDataset"] = WdsRecipe({f"sa_{i}": k for i, k in ids.items()}, ds.recipe)
        notes["WebDataset"] = (
            "sequential only: streams each tar in order (no random access), the shards split "
            "between workers; reads key-ordered copies of the samples' members, as SA-1B does not "
            "promise adjacent .jpg/.json members"
        )
    else:
        notes["WebDataset"] = "not installed (pip install -e '.[bench]')"
    if HAVE["litdata"]:
        t0 = time.perf_counter()
        litdata_write([(ids[i], *files[i]) for i in order], work / "litdata")
        datasets["LitData"] = litdata_dataset(work / "litdata", ds.recipe, args.seed)
        notes["LitData"] = (
            f"StreamingDataset(shuffle=True) of the JPEG + JSON bytes (optimize: "
            f"{time.perf_counter() - t0:.1f} s, untimed); installed by hand, not in the bench "
            f"extra: {WHY_NOT_LITDATA}"
        )
    else:
        notes["LitData"] = f"not installed, so not measured: {WHY_NOT_LITDATA}"
    extra = {"shards": shards, "keys": keys, "ds": ds, "ids": ids}
    return datasets, notes, extra


def loaders(datasets: dict, shards: list[Path], args: argparse.Namespace) -> dict:
    out = {}
    for name, ds in datasets.items():
        fn = ours_collate if name == OURS else collate
        for w in (0, 2):
            data = webdataset_pipeline(shards, ds) if name == "WebDataset" else ds
            out[(name, w)] = loader(data, fn, args.batch, w, args.seed)
    return out


def floor_case(ds: SA1BDataset, keys: Sequence[int]) -> Callable[[], None]:
    """decode_image alone (JPEG decode + resize + pad) on the same samples: our floor."""
    image = np.ones((ds.recipe.image_size, ds.recipe.image_size, 3), np.uint8)

    def run() -> None:
        for k in keys:
            s = ds.store[k]
            decode_image(s.jpeg, s.height, s.width, ds.recipe.image_size, image)

    return run


def _x(ratio: float) -> str:
    return f"{ratio:.0f}x" if ratio >= 10 else f"{ratio:.1f}x"


def rows(sec: dict[str, list[float]], parts: dict[str, dict], n: int, tar_cost: dict) -> list:
    rate = {k: [n / t for t in v] for k, v in sec.items() if k != "floor"}
    floor_ms = 1e3 * p50(sec["floor"]) / n
    out = []
    for key, r in rate.items():
        name, w = key.rsplit(" W=", 1)
        ref, ours = p50(rate[f"{SEED} W={w}"]), p50(rate[f"{OURS} W={w}"])
        ratio = "ref" if name == SEED else f"{_x(p50(r) / ref)} seed"
        if name != OURS:
            ratio += f"; sa1b_pack {_x(ours / p50(r))} faster"
        if name == OURS:
            w0 = 1e3 / p50(rate[f"{OURS} W=0"])
            top = f"JPEG decode + resize {100 * floor_ms / w0:.0f}% of W=0 ({floor_ms:.1f} ms)"
        else:
            steps = {k: p50(v) for k, v in parts.get(name, {}).items()}
            big = max(steps, key=steps.get)
            top = f"{big} {100 * steps[big] / sum(steps.values()):.0f}% of W=0"
        if name == "WebDataset":
            top += "; sequential only"
        if w == "2":
            more = "the IPC copy via /dev/shm" if name == OURS else "fresh pages for all masks"
            top = f"{p50(r) / p50(rate[f'{name} W=0']):.2f}x W=0 on 2 cores ({more}); {top}"
        out.append(summary_row(f"{name}, {w} workers", p50(r), "samples/s", n=len(r),
                               ratio=ratio, dominated=top))  # fmt: skip
    item = parts.get("naive tar", {}).get("getmember + extractfile + read", [])
    if item:
        out.append(
            latency_row(
                "naive tar: getmember + extractfile + read, per item",
                item,
                dominated="2 getmember calls (list search) + 2 member reads",
            )
        )
    out.append(
        summary_row(
            f"naive tar: first getmember, full source shard ({tar_cost['members']} members)",
            1e3 * tar_cost["first_s"],
            "ms",
            n=1,
            dominated="reads every member header (O(n))",
        )
    )
    out.append(latency_row(
        "naive tar: later getmember, full source shard", tar_cost["lookup_s"],
        dominated="linear search of the member list (O(n) per item)"))  # fmt: skip
    return out


def reading(chart: list[dict[str, Any]], parts: dict[str, dict]) -> str:
    """What the peer rows say, computed: the speedup range and what the peers spend time on."""
    ours = {c["workers"]: c["samples_s"] for c in chart if c["system"] == OURS}
    others = [c for c in chart if c["system"] != OURS]
    if not others:
        return "No peer ran."
    x = [ours[c["workers"]] / c["samples_s"] for c in others]
    w0 = [c["samples_s"] for c in others if c["workers"] == 0]
    coco = [p50(v[k]) / sum(p50(t) for t in v.values()) for v in parts.values() for k in v
            if k.startswith("pycocotools")]  # fmt: skip
    share = f"{100 * min(coco):.0f}-{100 * max(coco):.0f}%" if coco else "most"
    return (
        f"Reading: sa1b_pack delivers {_x(min(x))}-{_x(max(x))} the samples/s of every peer, "
        f"at 0 and at 2 workers. The peers spend {share} of a sample in pycocotools decoding "
        "every mask at full size before sampling 64, so how their bytes arrive ("
        + ", ".join(dict.fromkeys(c["system"] for c in others))
        + f") moves them by {max(w0) / min(w0):.2f}x at most."
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_input_args(p)
    p.add_argument("--samples", type=int, default=8, help="images per epoch, spread over shards")
    p.add_argument("--rounds", type=int, default=2, help="timed epochs of every peer loader")
    p.add_argument("--fast-rounds", type=int, default=5, help="timed epochs of sa1b_pack")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--image-size", type=int, default=1024)
    p.add_argument("--mask-size", type=int, default=256)
    args = p.parse_args(argv)
    if args.smoke:
        args.samples, args.rounds, args.batch, args.image_size, args.mask_size = 4, 1, 2, 64, 16
        args.fast_rounds = 1
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    env = environment()
    env["torch_threads"] = torch.get_num_threads()
    tars = source_tars(args)
    print_header(f"peers: {input_description(args, tars)}", env)
    with work_dir(args.store) as tmp:
        datasets, notes, extra = build(args, tars, Path(tmp))
        n = len(extra["keys"])
        tar_cost = tar_index_costs(tars[0], 200, args.seed)
        los = loaders(datasets, extra["shards"], args)
        print("sa1b_pack: first epochs (worker start) ...", flush=True)
        epoch(los[(OURS, 2)])
        seen: dict[str, dict[int, list[int]]] = {name: {} for name in datasets}
        epoch(los[(OURS, 0)], seen[OURS])
        ours = {f"{OURS} W={w}": (lambda lo=los[(OURS, w)]: epoch(lo)) for w in (0, 2)}
        ours["floor"] = floor_case(extra["ds"], extra["keys"])
        print(f"sa1b_pack, {args.fast_rounds} rounds ...", flush=True)
        sec = measure_side_by_side(ours, args.fast_rounds, warmup=0)
        # The peers apart: each frees GBs of pycocotools output per epoch, and on this VM the
        # pages going back to the host slow whatever runs next.
        cases = {f"{name} W={w}": (lambda lo=lo, s=seen[name] if w == 0 else None: epoch(lo, s))
                 for (name, w), lo in los.items() if name != OURS}  # fmt: skip
        print(f"{len(cases)} peer loaders, {args.rounds} rounds ...", flush=True)
        sec.update(measure_side_by_side(cases, args.rounds, warmup=0))
        check = {name: s == seen[OURS] for name, s in seen.items() if name != OURS}
        parts = {name: dict(ds.parts) for name, ds in datasets.items() if hasattr(ds, "parts")}
        summary = rows(sec, parts, n, tar_cost)
        del los, datasets, extra
    print()
    table = print_summary(summary)
    text = [
        f"{n} images per epoch (the first of each shard that have passing masks), batch "
        f"{args.batch}, image {args.image_size}, 64 masks at {args.mask_size}; median of "
        f"{args.fast_rounds} interleaved epochs for sa1b_pack (persistent fork workers started "
        f"by an untimed epoch), then of {args.rounds} for the peers, interleaved with each "
        "other (fork workers started per epoch, PyTorch's default); page cache warm. Same "
        "masks drawn as sa1b_pack: " + ", ".join(f"{k} {v}" for k, v in check.items()),
        *(f"{k}: {v}." for k, v in notes.items()),
    ]
    chart = [{"system": key.rsplit(" W=", 1)[0], "workers": int(key.rsplit(" W=", 1)[1]),
              "samples_s": n / p50(t)} for key, t in sec.items() if key != "floor"]  # fmt: skip
    text.insert(0, reading(chart, parts))
    print("\n" + "\n".join(text))
    print(f"allocator: {env['allocator']}")
    result = {
        "environment": env,
        "args": args_dict(args),
        "summary": summary,
        "notes": text,
        "check_same_masks": check,
        "chart": chart,
        "raw_seconds": sec,
        "parts": parts,
        "tar_index": tar_cost,
        "table": table,
    }
    path = write_results("peers-smoke" if args.smoke else "peers", result, args.results)
    print(f"results: {path}")
    return result


if __name__ == "__main__":
    main()

"""sa1b_pack against what a user would pick instead, on the same images and training recipe:
seed-style extracted files, the seed's naive tar, WebDataset, LitData (when installed); and a
full-resolution sample against PIL + json + pycocotools."""

from __future__ import annotations

import importlib.util

import baselines as b
import harness as h
import torch
from harness import Ctx, Result, question
from torch.utils.data import DataLoader, RandomSampler, Subset

from sa1b_pack import open_store
from sa1b_pack.torch import SA1BDataset, collate

OURS = "sa1b_pack"


def loader(ds, fn, batch: int, workers: int, seed: int) -> DataLoader:
    """Map-style: random order (seeded); WebDataset: its own order. sa1b_pack's workers are
    persistent (an untimed epoch starts them), the peers' start with each epoch (PyTorch's
    default; ~50 ms against epochs of seconds)."""
    iterable = isinstance(ds, torch.utils.data.IterableDataset)
    sampler = None if iterable else RandomSampler(ds, generator=torch.Generator().manual_seed(seed))
    return DataLoader(ds, batch, sampler=sampler, collate_fn=fn, num_workers=workers,
                      persistent_workers=workers > 0 and fn is collate,
                      multiprocessing_context="fork" if workers else None)  # fmt: skip


def epoch(lo: DataLoader) -> None:
    for _ in lo:
        pass


def full_resolution(ctx: Ctx, rounds: int) -> tuple[list[float], list[float], int]:
    """Whole samples (image + all masks at full size), ours vs the usual reader, interleaved."""
    store = open_store(ctx.store)
    indices = h.with_masks(store, ctx.size(4, 2), ctx.seed)
    files = b.extract(b.read_source(ctx.tars, {store[i].image_id for i in indices}),
                      ctx.work / "peers-full")  # fmt: skip
    buf = h.faulted(max(len(store[i]) * store[i].height * store[i].width for i in indices))
    ours, base = [], []
    for n, i in enumerate(indices):
        s = store[i]
        out = h.flat_view(buf, (len(s), s.height, s.width))
        t = h.side_by_side({"ours": lambda s=s, out=out: (s.image(), s.masks(out=out)),
                          "base": lambda s=s, out=out: b.baseline_read(*files[s.image_id], out)},
                         rounds, warmup=int(n == 0))  # fmt: skip
        ours, base = ours + t["ours"], base + t["base"]
    return ours, base, len(indices)


@question("peers", "How does sa1b_pack compare with what a user would pick instead, on the same "
          "training recipe?")  # fmt: skip
def peers(ctx: Ctx) -> Result:
    size, m, batch, rounds = ctx.size(1024, 64), ctx.size(256, 16), ctx.size(4, 2), ctx.size(2, 1)
    ds = SA1BDataset(ctx.store, image_size=size, mask_size=m, max_masks=64,
                     min_predicted_iou=0.88, min_stability_score=0.95, min_area=100,
                     seed=ctx.seed)  # fmt: skip
    positions = h.spread(len(ds), ctx.size(8, 4, 16), ctx.seed)
    keys = {ds.store[int(ds.index[p])].image_id: int(ds.index[p]) for p in positions}
    source = b.read_source(ctx.tars, set(keys))
    files = b.extract(source, ctx.work / "peers-files")
    order = sorted(keys)
    half = {i: k * 2 // len(order) for k, i in enumerate(order)}  # 2 small tars: 1 per worker
    tars = [b.key_ordered_tar({i: source[i] for i in order if half[i] == k},
                              ctx.work / f"peers-wds/{k}.tar") for k in (0, 1)]  # fmt: skip
    r = ds.recipe
    sets = {
        OURS: Subset(ds, positions),
        "seed-style files": b.SeedFiles([files[i] for i in order], [keys[i] for i in order], r),
        "naive tar": b.NaiveTar([(tars[half[i]], f"sa_{i}") for i in order],
                                [keys[i] for i in order], r),
        "WebDataset": b.WdsStage({f"sa_{i}": k for i, k in keys.items()}, r),
    }  # fmt: skip
    if importlib.util.find_spec("litdata"):
        sets["LitData"] = b.litdata(files, keys, ctx.work / "peers-lit", r, ctx.seed)
    loaders = {}
    for name, data in sets.items():
        for w in (0, 2):
            src = b.webdataset(tars, data) if name == "WebDataset" else data
            loaders[name, w] = loader(src, collate if name == OURS else b.collate, batch, w,
                                      ctx.seed)  # fmt: skip
    epoch(loaders[OURS, 0])  # untimed: kernels; and start our persistent workers
    epoch(loaders[OURS, 2])
    cases = {f"{name} W={w}": (lambda lo=lo: epoch(lo)) for (name, w), lo in loaders.items()}
    sec = h.side_by_side(cases, rounds, warmup=0)
    n = len(positions)
    rows, chart = [], []
    for key, t in sec.items():
        name, w = key.rsplit(" W=", 1)
        if name == OURS:  # the reference in these rounds; its samples/s: the loader question
            continue
        rel = f"sa1b_pack {h.x(h.ratio(t, sec[f'{OURS} W={w}']))} faster"
        what = "sequential only (streams each tar)" if name == "WebDataset" else "random order"
        rows.append(h.row(f"{name}, {w} workers", [n / v for v in t], "samples/s", rel, what))
        chart.append({"system": name, "workers": int(w), "samples_s": n / h.p50(t)})
    ours, base, count = full_resolution(ctx, ctx.size(3, 1))
    rows += [
        h.row("full-res sample: image() + masks(out=)", [1e3 * v for v in ours], "ms",
            f"{h.x(h.ratio(base, ours))} faster", "all masks, full size, reused buffer"),
        h.row("full-res sample: PIL + json + pycocotools", [1e3 * v for v in base], "ms", "ref",
            "masks copied to (N,H,W) in the same buffer"),
    ]  # fmt: skip
    speed = [h.ratio(t, sec[f"{OURS} W={k[-1]}"]) for k, t in sec.items() if OURS not in k]
    parts = {name: d.parts for name, d in sets.items() if getattr(d, "parts", None)}
    share = [h.p50(p["pycocotools decode of all masks"]) / sum(h.p50(v) for v in p.values())
             for p in parts.values()]  # fmt: skip
    w0 = [n / h.p50(t) for k, t in sec.items() if OURS not in k and k.endswith("W=0")]
    reading = [f"sa1b_pack delivers {h.x(min(speed))}-{h.x(max(speed))} the samples/s of each peer "
               f"at 0 and 2 workers. The peers spend {100 * min(share):.0f}-"
               f"{100 * max(share):.0f}% of a sample in pycocotools decoding every mask, so how "
               f"their bytes arrive moves them by {max(w0) / min(w0):.2f}x at most."]  # fmt: skip
    notes = [
        f"{n} images per epoch, batch {batch}, image {size}, up to 64 masks at {m}; "
        f"{rounds} rounds, every loader interleaved; LitData "
        + (
            "measured"
            if "LitData" in sets
            else "not installed: not measured (it pulls "
            "torchvision, whose CUDA wheel fails beside the CPU torch)"
        )
        + f". Full-resolution samples: {count} images, interleaved per image."
    ]
    return Result(rows, reading, notes, {"chart": chart})

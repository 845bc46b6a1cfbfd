"""sa1b_pack against what a user would pick instead, on the same images and training recipe:
seed-style extracted files, the seed's naive tar, WebDataset; a full-resolution sample against
PIL + json + pycocotools (the usual reader: an annotation JSON and every mask decoded)."""

from __future__ import annotations

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


def full_resolution(ctx: Ctx, rounds: int) -> tuple[list[float], list[float], int]:
    """Whole samples (image + all masks at full size), ours vs the usual reader, interleaved."""
    store = open_store(ctx.store)
    indices = h.with_masks(store, ctx.size(4, 2), ctx.seed)
    files = b.extract(b.read_source(ctx.tars, {store[i].image_id for i in indices}),
                      ctx.work / "peers-full")  # fmt: skip
    buf = h.mask_buffer(store, indices)
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
    recipe, batch, rounds = h.recipe(ctx), ctx.size(4, 2), ctx.size(2, 1)
    ds = SA1BDataset(ctx.store, **recipe)
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
    loaders = {}
    for name, data in sets.items():
        for w in (0, 2):
            src = b.webdataset(tars, data) if name == "WebDataset" else data
            loaders[name, w] = loader(src, collate if name == OURS else b.collate, batch, w,
                                      ctx.seed)  # fmt: skip
    h.drain(loaders[OURS, 0])  # untimed: kernels; and start our persistent workers
    h.drain(loaders[OURS, 2])
    cases = {f"{name}, {w} workers": (lambda lo=lo: h.drain(lo)) for (name, w), lo in
             loaders.items()}  # fmt: skip
    n = len(positions)
    rate = {k: [n / v for v in t] for k, t in h.side_by_side(cases, rounds, warmup=0).items()}
    rows = []
    for key, got in rate.items():
        name, w = key.split(", ")[0], int(key.split(", ")[1][0])
        ours = rate[f"{OURS}, {w} workers"]
        rel = "ref" if got is ours else f"sa1b_pack {h.x(h.ratio(ours, got))} faster"
        what = {OURS: "random order; persistent workers", "WebDataset": "sequential only "
                "(streams each tar)"}.get(name, "random order")  # fmt: skip
        rows.append(h.row(key, got, "samples/s", rel, what))
    parts = [d.parts for d in sets.values() if getattr(d, "parts", None)]
    share = [100 * h.p50(p["pycocotools decode of all masks"]) / sum(h.p50(v) for v in p.values())
             for p in parts]  # fmt: skip
    rows.append(h.row("peers, 0 workers: pycocotools share of a sample", share, "%",
                      what="p50 over the peers; their samples timed step by step"))  # fmt: skip
    ours, base, count = full_resolution(ctx, ctx.size(3, 1))
    rows += [
        h.row("full-res sample: image() + masks(out=)", [1e3 * v for v in ours], "ms",
              f"{h.x(h.ratio(base, ours))} faster", "all masks, full size, reused buffer"),
        h.row("full-res sample: PIL + json + pycocotools", [1e3 * v for v in base], "ms", "ref",
              "masks copied to (N,H,W) in the same buffer"),
    ]  # fmt: skip
    notes = [f"{n} images per epoch, batch {batch}, image {recipe['image_size']}, up to 64 "
             f"masks at {recipe['mask_size']}; {rounds} rounds, every loader interleaved. "
             f"Full-resolution samples: {count} images, interleaved per image."]  # fmt: skip
    return Result(rows, notes)

"""Per-sample cost of each way of reading the store, sequential vs random order, warm vs cold."""

from __future__ import annotations

import harness as h
import numpy as np
from harness import Ctx, Result, question

from sa1b_pack import open_store
from sa1b_pack.train.recipe import Recipe, training_sample


@question("access", "What does each way of reading a sample cost, in sequential and random "
          "order, page cache warm and cold?")  # fmt: skip
def access(ctx: Ctx) -> Result:
    store, k = open_store(ctx.store), ctx.size(64, 8)
    recipe = Recipe(**h.recipe(ctx, max_masks=k))
    size, m = recipe.image_size, recipe.mask_size
    indices = h.with_masks(store, ctx.size(48, 4, 200), ctx.seed)
    rng = np.random.default_rng(ctx.seed)
    picks = {i: rng.choice(len(store[i]), min(k, len(store[i])), replace=False) for i in indices}
    buf = h.mask_buffer(store, indices, k)

    def meta(i: int) -> None:
        s = store[i]
        _ = (s.image_id, s.bbox, s.area, s.predicted_iou)

    def masks(i: int) -> None:
        s = store[i]
        s.masks(out=h.flat_view(buf, (len(s), s.height, s.width)))

    def sampled(i: int) -> None:
        out = h.flat_view(buf, (len(picks[i]), size, size))
        store[i].masks(picks[i], longest=size, pad=True, out=out)

    patterns = {
        "store[i] + 4 metadata fields": (meta, "image_id, bbox, area, predicted_iou"),
        "masks(), all, full size": (masks, "store[i].masks(out=) into a reused buffer"),
        f"masks({k} sampled, longest={size})": (sampled, "pad=True, out= reused"),
        "image()": (lambda i: store[i].image(), "full-size JPEG decode, fresh array"),
        "training recipe": (lambda i: training_sample(store, i, recipe),
                            f"training_sample: image {size}, up to {k} masks at {m}"),
    }  # fmt: skip
    orders = {"sequential": indices, "random": list(np.random.default_rng(1).permutation(indices))}
    files = h.store_files(ctx.store)
    passes = ctx.size(2, 1)
    rows, sec = [], {}
    for n, (name, (op, what)) in enumerate(patterns.items()):
        h.per_call(op, indices)  # untimed: kernels, caches, every page warm
        for cache in ("warm", "cold"):
            for order, items in orders.items():
                reps = (passes * (10 if n == 0 else 1)) if cache == "warm" else 1
                got = h.per_call(
                    op, items * reps, (lambda: h.evict(files)) if cache == "cold" else None
                )
                sec[name, order, cache] = got
                ref = sec[name, "sequential", "warm"]
                rel = "ref" if got is ref else f"{h.p50(got) / h.p50(ref):.2f}x"
                rows.append(h.latency(f"{name}, {order}, {cache}", got, rel, what))
    notes = [f"{len(indices)} samples with masks; warm: {passes} timed passes per order (10x "
             "for metadata) after an untimed one; cold: one pass per order with the store's "
             "files evicted before every call (madvise + posix_fadvise DONTNEED; the VM host may "
             "still cache the disk), so readahead helps neither order."]  # fmt: skip
    return Result(rows, notes)

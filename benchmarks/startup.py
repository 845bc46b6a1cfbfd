"""A job's start: SA1BDataset on a 1,000-part store, first build against the persisted eligible
index, projected to SA-1B. (What a manifest commit writes is a frozen decision:
docs/decisions/manifest-scaling.md.)"""

from __future__ import annotations

import shutil

import harness as h
import numpy as np
from harness import Ctx, Result, question

from sa1b_pack import open_store
from sa1b_pack.train.index import load_index, save_index

SA1B_IMAGES = 11_000_000  # SA-1B's 1,000 shards: as many manifest entries as the store here
FILTERS = dict(min_predicted_iou=0.88, min_stability_score=0.95, min_area=100)


@question("startup", "How fast does a job start from the persisted eligible index, against the "
          "first build, and projected to SA-1B?")  # fmt: skip
def startup(ctx: Ctx) -> Result:
    from sa1b_pack.torch import SA1BDataset

    parts = ctx.size(1000, 20)  # tiny parts, packed once into benchmarks/.cache (smoke: per run)
    tars = h.synth_cached(range(parts), 2, True, None)
    where = (ctx.work if ctx.smoke else h.CACHE_DIR) / f"startup-{parts}-{tars[0].parent.name}"
    store = h.pack_store(tars, where, jobs=2)  # resumes; a complete store is left as it is
    folder, recipe = ctx.work / "index", dict(image_size=64, mask_size=16, **FILTERS)
    start = {"start": lambda: SA1BDataset(store, index_cache=folder, **recipe)}
    first = h.side_by_side(start, ctx.size(5, 2), 0, lambda: shutil.rmtree(folder, True))["start"]
    warm = h.side_by_side(start, ctx.size(20, 3))["start"]
    big = np.arange(ctx.size(SA1B_IMAGES, 100_000), dtype=np.int64)
    save_index(ctx.work, "bench", big)
    load = h.side_by_side({"load": lambda: load_index(ctx.work, "bench")}, 5)["load"]
    masks = open_store(store).info()["masks"]
    rows = [
        h.latency(f"SA1BDataset start, first build ({parts:,} parts)", first, "ref",
                  f"{masks:,} masks; filters {FILTERS}"),
        h.latency("SA1BDataset start, persisted index", warm,
                  f"{h.p50(warm) / h.p50(first):.1%} of first",
                  "manifest read, key, map + checksum"),
        h.latency(f"load + checksum, index of {len(big):,} images", load, "", "mmap + sha256"),
        h.row("projected start at SA-1B, persisted index",
              [h.p50(warm) + h.p50(load) * SA1B_IMAGES / len(big)], "s", "",
              f"start above + load of {SA1B_IMAGES:,} images"),
    ]  # fmt: skip
    notes = [f"{parts} parts of 2 small synthetic images; first build: the index folder emptied "
             "before each call."]  # fmt: skip
    return Result(rows, notes)

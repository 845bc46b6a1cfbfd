"""A job's start (SA1BDataset on a 1,000-part store: first build vs the persisted eligible
index, projected to SA-1B) and what a manifest commit writes at shard k (whole manifest, as
before journal.py, vs a delta)."""

from __future__ import annotations

import shutil
import time

import harness as h
import numpy as np
from harness import Ctx, Result, question

from sa1b_pack import open_store
from sa1b_pack.storage import storage_for
from sa1b_pack.store import journal
from sa1b_pack.store.manifest import empty_manifest, read_manifest
from sa1b_pack.train.index import load_index, save_index

SA1B_IMAGES = 11_000_000  # SA-1B's 1,000 shards: as many manifest entries as the store here
FILTERS = dict(min_predicted_iou=0.88, min_stability_score=0.95, min_area=100)


def startup_store(ctx: Ctx, parts: int):
    """A store of ``parts`` tiny parts, packed once into benchmarks/.cache (smoke: per run)."""
    tars = h.synth_cached(range(parts), 2, True, None)
    where = ctx.work if ctx.smoke else h.CACHE_DIR
    return h.pack_store(tars, where / f"startup-{parts}-{tars[0].parent.name}", jobs=2)


def counted(save, sizes: list[int]):
    return lambda body, generation: (sizes.append(len(body)), save(body, generation))


def commit_bytes(ctx: Ctx, store, ks: list[int]) -> dict[str, dict]:
    """Bytes and seconds of each commit of k real entries, whole manifest vs delta."""
    entries = list(read_manifest(store)["shards"].values())
    out = {}
    for mode in ("whole", "delta"):
        root = ctx.work / f"commits-{mode}"
        storage, sizes, manifest = storage_for(root), [], empty_manifest()
        storage.save_manifest = counted(storage.save_manifest, sizes)
        storage.save_delta = counted(storage.save_delta, sizes)
        t0 = time.perf_counter()
        for i in range(max(ks)):
            name = f"sa_{i:06d}"
            manifest["shards"][name] = {**entries[i % len(entries)], "index": i}
            if mode == "whole":  # what every commit wrote before journal.py
                journal.write(storage, manifest)
            else:
                journal.commit(storage, manifest, [name])
        out[mode] = {"sizes": sizes, "seconds": time.perf_counter() - t0}
        shutil.rmtree(root)
    return out


@question("startup", "How fast does a job start from the persisted eligible index, and what "
          "does a manifest commit write at shard k?")  # fmt: skip
def startup(ctx: Ctx) -> Result:
    from sa1b_pack.torch import SA1BDataset

    parts = ctx.size(1000, 20)
    store = startup_store(ctx, parts)
    folder, recipe = ctx.work / "index", dict(image_size=64, mask_size=16, **FILTERS)
    start = lambda _: SA1BDataset(store, index_cache=folder, **recipe)  # noqa: E731
    first = h.per_call(start, range(ctx.size(5, 2)), lambda: shutil.rmtree(folder, True))
    warm = h.per_call(start, range(ctx.size(20, 3)))
    big = np.arange(ctx.size(SA1B_IMAGES, 100_000), dtype=np.int64)
    key = "bench"
    save_index(ctx.work, key, big)
    load = h.per_call(lambda _: load_index(ctx.work, key), range(5))
    load_sa1b = h.p50(load) * SA1B_IMAGES / len(big)
    masks = open_store(store).info()["masks"]
    start_sa1b = h.p50(warm) + load_sa1b
    share = h.p50(warm) / h.p50(first)
    rows = [
        h.latency(f"SA1BDataset start, first build ({parts:,} parts)", first, "ref",
                  f"{masks:,} masks; filters {FILTERS}"),
        h.latency("SA1BDataset start, persisted index", warm, f"{share:.1%} of first",
                  "manifest read, key, map + checksum"),
        h.latency(f"load + checksum, index of {len(big):,} images", load, "", "mmap + sha256"),
        h.row("projected start at SA-1B, persisted index", [start_sa1b], "s", "",
              f"start above + load of {SA1B_IMAGES:,} images"),
    ]  # fmt: skip
    ks = [k for k in (10, 100, 1000) if k <= ctx.size(1000, 100)]
    runs = commit_bytes(ctx, store, ks)
    for k in ks:
        whole, delta = runs["whole"]["sizes"][k - 1], runs["delta"]["sizes"]
        mean = sum(delta[:k]) / k
        rows += [
            h.row(f"manifest commit at k={k}, before (whole)", [whole / 1e3], "KB", "ref"),
            h.row(f"manifest commit at k={k}, delta", [delta[k - 1] / 1e3], "KB",
                  h.x(whole / delta[k - 1]) + " less", "this commit"),
            h.row(f"manifest commits 1..{k}, delta, mean", [mean / 1e3], "KB",
                  h.x(sum(runs["whole"]["sizes"][:k]) / k / mean) + " less",
                  f"compactions included (every <= {journal.COMPACT_EVERY} commits)"),
        ]  # fmt: skip
    k = max(ks)
    rows += [h.row(f"{k:,} commits, {mode}", [runs[mode]["seconds"]], "s", "",
                   "temp + fsync + rename each") for mode in ("whole", "delta")]  # fmt: skip
    reading = [
        f"a start from the persisted index takes {share:.1%} of the first build on {parts:,} "
        f"parts ({'within' if share <= 0.10 else 'OVER'} the 10 % aim); projected at SA-1B: "
        f"{start_sa1b:.2f} s ({'under' if start_sa1b < 1 else 'OVER'} 1 s; the first build there: "
        "the scale question's index cost per 1 M masks x 1,100).",
        f"commit {k:,} writes {runs['delta']['sizes'][k - 1] / 1e3:.1f} KB as a delta, "
        f"{runs['whole']['sizes'][k - 1] / 1e3:.0f} KB whole; {k:,} commits took "
        f"{runs['delta']['seconds']:.1f} s against {runs['whole']['seconds']:.1f} s.",
    ]  # fmt: skip
    notes = [f"{parts} parts of 2 small synthetic images; commits of the store's own entries "
             "into a local folder; first build: index folder emptied per call."]  # fmt: skip
    return Result(rows, reading, notes, {"commits": runs})

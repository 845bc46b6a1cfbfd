"""All of SA-1B, many ranks: a 1,000-part store read per process and per DataLoader worker
(start, first touch of a part, descriptors, maps, RSS, uniform vs blocks order), a part of
real size, and the run's store on a loopback S3 with per-request latency, with and without
the local part cache. The numbers feed docs/scale.md's projection."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from harness import Ctx, Result, pack_store, question, row, s3_server, synth_cached, x
from harness import recipe as recipe_of

from sa1b_pack import open_store

PART_IMAGES, PART_MASKS = 11_000, 715_000  # one real SA-1B shard
LATENCY = 0.020  # seconds added to every request to the object store

CHILD = Path(__file__).with_name("scale_child.py")


def child(store: Path, *args: str) -> dict:
    """One fresh process (imports, opens, reads) measuring itself; its JSON line."""
    proc = subprocess.run([sys.executable, str(CHILD), str(store), *args],
                          capture_output=True, text=True, timeout=1800)  # fmt: skip
    if proc.returncode:
        raise SystemExit(f"scale_child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def real_size_part(template: Path, dst: Path) -> Path:
    """A one-part store of a real shard's row counts: the template's first part with its
    table rows repeated (spans stay inside the same payloads), committed by a manifest."""
    import pyarrow as pa

    from sa1b_pack.format.files import PART_FILES, TABLE_FILES
    from sa1b_pack.store.manifest import file_digest, read_manifest, write_manifest
    from sa1b_pack.write.tables import write_table

    manifest = read_manifest(template)
    name = min(manifest["shards"], key=lambda n: manifest["shards"][n]["index"])
    entry = dict(manifest["shards"][name])
    src, part = template / "parts" / name, dst / "parts" / name
    part.mkdir(parents=True)
    tables = {}
    for table, (_, arrow) in TABLE_FILES.items():
        tables[table] = pa.ipc.open_file(pa.memory_map(str(src / arrow))).read_all()
    k = math.ceil(PART_MASKS / max(tables["annotations"].num_rows, 1))
    k = max(k, math.ceil(PART_IMAGES / tables["images"].num_rows))
    images = pa.concat_tables([tables["images"]] * k).combine_chunks()
    counts = images.column("mask_count").to_numpy().astype(np.uint64)
    start = pa.array(np.cumsum(counts) - counts, pa.uint64())
    images = images.set_column(images.schema.get_field_index("mask_start"), "mask_start", start)
    masks = pa.concat_tables([tables["annotations"]] * k).combine_chunks()
    for table, (parquet, arrow) in zip((images, masks), TABLE_FILES.values(), strict=True):
        write_table(table, part / parquet, part / arrow)
    for f in ("jpeg.bin", "counts.bin", "resized.bin"):
        (part / f).write_bytes((src / f).read_bytes())
    entry.update(images=images.num_rows, masks=masks.num_rows,
                 files={f: file_digest(part / f) for f in PART_FILES})  # fmt: skip
    write_manifest(dst, {**manifest, "shards": {name: entry}})
    return dst


def remote(ctx: Ctx) -> tuple[dict[str, float], dict[str, float]]:
    """Samples/s of the training recipe over the run's store: local, and on S3 with LATENCY
    per request, uncached, cache cold, cache warm (blocks order, one process); and the
    traffic: pack to S3 (no delay), requests and bytes per sample uncached."""
    from sa1b_pack.train.recipe import Recipe, training_sample

    delay, recipe = [0.0], Recipe(**recipe_of(ctx, filtered=False))
    server = s3_server("scale", delay)
    try:
        url, t0 = "s3://scale/store", time.perf_counter()
        pack_store(ctx.tars, url)  # type: ignore[arg-type]
        tar_mb = sum(p.stat().st_size for p in ctx.tars) / 1e6
        traffic = {"pack_mb_s": tar_mb / (time.perf_counter() - t0)}
        local = open_store(ctx.store)
        order = local.epoch_order(seed=0, epoch=0, order="blocks", window=1)
        items = [int(i) for i in order if len(local[int(i)])][: ctx.size(24, 4)]

        def rate(store) -> float:
            t0 = time.perf_counter()
            for i in items:
                training_sample(store, i, recipe)
            return len(items) / (time.perf_counter() - t0)

        rate(local)  # kernels compiled, pages warm
        delay[0] = LATENCY
        # every case on a fresh reader (opened untimed): each pays its first touch of a part
        far, cache = open_store(url), ctx.work / "scale-cache"
        rates = {"local": rate(open_store(ctx.store)), "S3, no cache": rate(far)}
        traffic.update(requests=far.storage.stats.requests / len(items),
                       kb=far.storage.stats.bytes / len(items) / 1e3)  # fmt: skip
        for case in ("S3, cache cold", "S3, cache warm"):
            rates[case] = rate(open_store(url, cache_dir=cache, cache_bytes=10**12))
        return rates, traffic
    finally:
        delay[0] = 0.0
        server.shutdown()


@question("scale", "What do 1,000 parts cost a process and a DataLoader worker, and what does "
          "object storage cost with and without the local cache?")  # fmt: skip
def scale(ctx: Ctx) -> Result:
    parts = ctx.size(1000, 40)
    tars = synth_cached(range(parts), 2, True, None)
    store = pack_store(tars, ctx.work / "scale-1000", jobs=2)
    real = real_size_part(ctx.store, ctx.work / "scale-real")
    runs = {order: child(store, "--order", order) for order in ("uniform", "blocks")}
    big = child(real, "--part-only")
    rates, traffic = remote(ctx)
    u, b = runs["uniform"], runs["blocks"]
    rows = [
        row("open_store + len + store[0], fresh process", [u["start_s"] * 1e3], "ms", "",
            f"{parts} parts; after imports ({u['import_s']:.2f} s)"),
        row("SA1BDataset(...) build", [u["dataset_s"] * 1e3], "ms", "",
            f"{u['dataset_images']} eligible images of {u['samples']}"),
        row("first touch of a small part", [u["touch_ms"]], "ms", "", "open + check, p50"),
        row("first touch of a real-size part", [big["touch_ms"]], "ms", "",
            f"{big['images']:,} images, {big['masks']:,} masks; map + cheap checks"),
        row("index of eligible images, per 1 M masks", [big["index_ms_per_m"]], "ms", "",
            "filters over the mapped columns of the real-size part"),
    ]  # fmt: skip
    for name, r in runs.items():
        rows += [
            row(f"read every sample, {name} order", [r["pass_rate"]], "samples/s",
                "ref" if name == "uniform" else f"{x(r['pass_rate'] / u['pass_rate'])} uniform",
                "store[i] + metadata + one mask, one process"),
            row(f"  process: open descriptors / part maps / RSS, {name}",
                [r["fds"]], "fds", "", f"{r['maps']} maps, {r['rss_mb']:.0f} MB RSS"),
            row(f"DataLoader 2 workers, {name} order", [r["loader_rate"]], "samples/s",
                "ref" if name == "uniform" else
                f"{x(r['loader_rate'] / u['loader_rate'])} uniform", "SA1BDataset, batch 8"),
            row(f"  per worker: descriptors / part maps / RSS, {name}",
                [r["worker_fds"]], "fds", "", f"{r['worker_maps']} maps, "
                f"{r['worker_rss_mb']:.0f} MB RSS (max over workers)"),
        ]  # fmt: skip
    loc = rates["local"]
    rows += [row(f"training recipe, {name}", [v], "samples/s",
                 "ref" if name == "local" else f"{x(v / loc)} local",
                 f"{LATENCY * 1e3:.0f} ms per request" if "S3" in name else "same samples")
             for name, v in rates.items()]  # fmt: skip
    rows += [row("S3, no cache: requests per sample", [traffic["requests"]], "requests",
                 what=f"{traffic['kb']:.0f} kB per sample; first touches of parts included"),
             row("pack the run's shards to S3 (no delay)", [traffic["pack_mb_s"]], "MB/s",
                 what="MB/s of tar; loopback: our overhead only")]  # fmt: skip
    notes = [
        f"{parts} parts of 2 small images; real-size part: the run's first part with its "
        "rows repeated; S3: moto on loopback behind a WSGI wrapper sleeping before every "
        "response, store = the run's full-size shards, samples in blocks order (window 1)."
    ]
    data = {"scale": {"uniform": u, "blocks": b, "real_part": big, "remote": rates,
                      "traffic": traffic, "latency_s": LATENCY, "parts": parts}}  # fmt: skip
    return Result(rows, notes, data)

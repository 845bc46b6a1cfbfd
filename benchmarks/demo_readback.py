"""`make demo`, last step: read a packed store back, prove it equals its source tars, time it.

Usage: python benchmarks/demo_readback.py STORE SRC

Three random samples are compared bit for bit with the tar members they came from (JPEG bytes,
every annotation field, RLE strings, and decoded masks against pycocotools); then a short run
of bench_store's measurements on this store. Exits 1 if anything differs.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from baselines import SourceSample, extract, read_source
from bench_store import (
    HEADERS,
    bench_full,
    bench_masks,
    bench_metadata,
    full_rows,
    masks_rows,
    metadata_rows,
    reused_buffer,
    warm_up,
)
from common import environment, print_header, print_table, write_results
from pycocotools import mask as mask_util

from sa1b_pack import Sample, Store, open_store

FIELDS = ("id", "bbox", "area", "predicted_iou", "stability_score", "crop_box", "point_coords")


def source_tars(store: Store, src: Path) -> list[Path]:
    """The tar each part was packed from, as the manifest names it."""
    entries = store.manifest["shards"]
    return [src / entries[name]["source"]["file"] for name in store.shards]


def differences(sample: Sample, source: SourceSample) -> list[str]:
    """Every way ``sample`` differs from its source members; empty if bit-exact."""
    record = source.record()
    anns = record["annotations"]
    problems = []
    if bytes(sample.jpeg) != source.jpeg:
        problems.append("JPEG bytes differ")
    if (sample.height, sample.width) != (record["image"]["height"], record["image"]["width"]):
        problems.append("image size differs")
    if len(sample) != len(anns):
        return [*problems, f"{len(sample)} masks, the source has {len(anns)}"]
    columns = {
        "id": sample.ids,
        "bbox": sample.bbox,
        "area": sample.area,
        "predicted_iou": sample.predicted_iou,
        "stability_score": sample.stability_score,
        "crop_box": sample.crop_box,
        "point_coords": sample.point_coords,
    }
    for field in FIELDS:
        expected = [a[field] for a in anns]
        got = columns[field]
        got = [np.asarray(g).tolist() for g in got] if isinstance(got, list) else got.tolist()
        if got != expected:
            problems.append(f"field {field} differs")
    for j, ann in enumerate(anns):
        if sample.rle(j) != ann["segmentation"]:
            problems.append(f"RLE of mask {j} (id {ann['id']}) differs")
            break
    if anns:
        reference = mask_util.decode(source.rles()).transpose(2, 0, 1)
        if not np.array_equal(sample.masks(), reference):
            problems.append("decoded masks differ from pycocotools")
    return problems


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("store", type=Path)
    p.add_argument("src", type=Path, help="folder of the sa_NNNNNN.tar shards packed into it")
    p.add_argument("--check", type=int, default=3, help="random samples compared bit for bit")
    p.add_argument("--samples", type=int, default=4, help="samples in the short benchmark")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--results", type=Path, default=None, help="also write JSON results here")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    env = environment()
    print_header(f"demo_readback: {args.store} against {args.src}", env)
    store = open_store(args.store)
    source = read_source(source_tars(store, args.src))
    print(f"len(store) = {len(store)}  ({store.num_masks} masks, shards {store.shards})")
    for i in sorted({0, len(store) // 2, len(store) - 1}):
        s = store[i]
        print(f"  store[{i}]: image_id={s.image_id} shape=({s.height}, {s.width}) masks={len(s)}")

    rng = random.Random(args.seed)
    failures = 0
    for i in sorted(rng.sample(range(len(store)), min(args.check, len(store)))):
        s = store[i]
        problems = differences(s, source[s.image_id]) if s.image_id in source else ["no source"]
        state = "bit-exact" if not problems else "DIFFERS: " + "; ".join(problems)
        print(f"  check store[{i}] (image_id {s.image_id}, {len(s)} masks): {state}")
        failures += bool(problems)
    if failures:
        print(f"round trip FAILED for {failures} samples")
        return 1
    print("round trip OK\n")

    with_masks = [i for i in range(len(store)) if len(store[i]) > 0]
    picked = sorted(rng.sample(with_masks, min(args.samples, len(with_masks))))
    with tempfile.TemporaryDirectory(prefix="sa1b-demo-") as tmp:
        files = extract({store[i].image_id: source[store[i].image_id] for i in picked}, Path(tmp))
        warm_up(store, source, picked[0])
        buffer = reused_buffer(store, picked)
        meta = bench_metadata(store, 1000, args.seed)
        masks = bench_masks(store, source, picked, args.rounds, buffer)
        full = bench_full(store, files, picked, args.rounds, buffer)
        del buffer
    rows = metadata_rows(meta) + masks_rows(masks) + full_rows(full)
    print(f"short benchmark on {len(picked)} samples x {args.rounds} rounds (page cache warm):")
    table = print_table(HEADERS, rows)
    print(f"allocator: {env['allocator']}")
    if args.results is not None:
        result: dict[str, Any] = {"environment": env, "table": table, "rows": rows}
        print(f"results: {write_results('demo_readback', result, args.results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

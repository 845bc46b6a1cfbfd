"""`make demo`, last step: read a packed store back, compare it with its source tars, time it.

    python benchmarks/demo_readback.py STORE SRC

A few random samples are compared with the tar members they came from (JPEG bytes, annotation
fields, RLE strings, masks against pycocotools); then a mini benchmark on the same store:
metadata, all masks vs pycocotools, a whole sample vs PIL + json + pycocotools. Exits 1 if
anything differs.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from pathlib import Path

import harness as h
import numpy as np
from baselines import baseline_read, extract, read_source
from pycocotools import mask as mask_util

from sa1b_pack import open_store

FIELDS = ("mask_ids:id", "bbox", "area", "predicted_iou", "stability_score", "point_coords")


def differences(sample, members: dict[str, bytes]) -> list[str]:
    """Every way ``sample`` differs from its source members; empty if they agree."""
    record = json.loads(members["json"])
    anns, out = record["annotations"], []
    if bytes(sample.jpeg) != members["jpg"]:
        out.append("JPEG bytes differ")
    if len(sample) != len(anns):
        return [*out, f"{len(sample)} masks, the source has {len(anns)}"]
    for spec in FIELDS:
        attr, _, key = spec.partition(":")
        got = getattr(sample, attr)
        got = [np.asarray(g).tolist() for g in got] if isinstance(got, list) else got.tolist()
        if got != [a[key or attr] for a in anns]:
            out.append(f"field {key or attr} differs")
    if any(sample.rle(j) != a["segmentation"] for j, a in enumerate(anns)):
        out.append("RLE strings differ")
    elif anns and not np.array_equal(
        sample.masks(), mask_util.decode([a["segmentation"] for a in anns]).transpose(2, 0, 1)
    ):
        out.append("decoded masks differ from pycocotools")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("store", type=Path)
    p.add_argument("src", type=Path, help="folder of the sa_NNNNNN.tar shards packed into it")
    p.add_argument("--check", type=int, default=3, help="random samples compared")
    p.add_argument("--samples", type=int, default=4, help="samples in the mini benchmark")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--results", type=Path, help="also write JSON results here")
    args = p.parse_args(argv)
    env = h.environment()
    print(f"$ {env['command']}\n# {env['cpu_model']}; allocator: {env['allocator']}")
    store = open_store(args.store)
    entries = store.manifest["shards"]
    source = read_source([args.src / entries[name]["source"]["file"] for name in store.shards])
    print(f"len(store) = {len(store)}, shards {store.shards}")
    rng, failures = random.Random(0), 0
    for i in sorted(rng.sample(range(len(store)), min(args.check, len(store)))):
        s = store[i]
        problems = differences(s, source[s.image_id]) if s.image_id in source else ["no source"]
        state = "DIFFERS: " + "; ".join(problems) if problems else "bit-exact"
        print(f"  store[{i}] (image_id {s.image_id}, {len(s)} masks): {state}")
        failures += bool(problems)
    if failures:
        print(f"round trip FAILED for {failures} samples")
        return 1
    print("round trip OK\n")

    meta = h.per_call(lambda i: (store[i].image_id, store[i].bbox, store[i].area),
                      [rng.randrange(len(store)) for _ in range(1000)])  # fmt: skip
    picked = h.with_masks(store, args.samples, 0)
    buf = h.faulted(max(len(store[i]) * store[i].height * store[i].width for i in picked))
    sec: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="sa1b-demo-") as tmp:
        files = extract({store[i].image_id: source[store[i].image_id] for i in picked}, Path(tmp))
        for i in picked:
            s = store[i]
            out = h.flat_view(buf, (len(s), s.height, s.width))
            rles = [s.rle(j) for j in range(len(s))]
            cases = {"masks() ours": lambda s=s, out=out: s.masks(out=out),
                     "pycocotools": lambda r=rles, out=out: np.copyto(
                         out, mask_util.decode(r).transpose(2, 0, 1)),
                     "sample ours": lambda s=s, out=out: (s.image(), s.masks(out=out)),
                     "PIL+json+pycocotools": lambda s=s, out=out: baseline_read(
                         *files[s.image_id], out)}  # fmt: skip
            for k, t in h.side_by_side(cases, args.rounds).items():
                sec[k] = sec.get(k, []) + t
    rows = [h.latency("store[i] + 3 metadata fields", meta)] + [
        h.latency(k, t, "ref" if k in ("pycocotools", "PIL+json+pycocotools") else
                  f"{h.x(h.ratio(sec[ref], t))} faster")
        for (k, t), ref in zip(sec.items(), ["pycocotools"] * 2 + ["PIL+json+pycocotools"] * 2,
                               strict=True)
    ]  # fmt: skip
    print(f"mini benchmark, {len(picked)} samples x {args.rounds} rounds, page cache warm:")
    print(h.text_table(rows))
    if args.results is not None:
        path = h.write_json(args.results / f"demo_readback-{h.run_name()}.json",
                            {"environment": env, "rows": rows})  # fmt: skip
        print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

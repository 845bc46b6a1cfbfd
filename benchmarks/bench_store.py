"""What does the store buy over reading a full-resolution sample the usual way?

On the run's packed store and source shards, side by side: metadata access, all masks of a
sample decoded to (N, H, W) against pycocotools and against a memset of the same bytes, and a
whole sample (image + all masks) against the usual reader over extracted files (PIL + json +
pycocotools). Every ratio comes from rounds that interleave both sides. Packing speed and
sizes: pack_rate.py; the training recipe: bench_loader.py and peers.py.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from baselines import SourceSample, baseline_read, coco_to_nhw, extract, read_source
from common import (
    add_input_args,
    args_dict,
    environment,
    flat_view,
    input_description,
    measure_side_by_side,
    p50,
    p95,
    packed_store,
    print_header,
    print_table,
    source_tars,
    spread,
    summary_row,
    work_dir,
    write_results,
)
from PIL import Image
from pycocotools import mask as mask_util

from sa1b_pack import Store, open_store

HEADERS = ("measure", "p50", "unit", "p95", "ratio", "n", "dominated by / notes")


def mask_bytes(sample: Any) -> int:
    return len(sample) * sample.height * sample.width


def reused_buffer(store: Store, indices: Sequence[int]) -> np.ndarray:
    """One flat uint8 buffer big enough for any chosen sample's masks, touched once up front."""
    size = max([mask_bytes(store[i]) for i in indices] + [1])
    buffer = np.empty(size, np.uint8)
    buffer.fill(1)  # fault every page in now, not inside a timed call
    return buffer


# ---------------------------------------------------------------------------------------------
# Measurements (shared with demo_readback.py)


def bench_metadata(store: Store, repeats: int, seed: int = 0) -> list[float]:
    """Seconds per ``store[i]`` + reading image_id, bbox, area, predicted_iou, random i."""
    rng = np.random.default_rng(seed)
    indices = rng.integers(len(store), size=repeats + 100).tolist()
    times = []
    clock = time.perf_counter
    for k, i in enumerate(indices):
        t0 = clock()
        s = store[i]
        _ = (s.image_id, s.bbox, s.area, s.predicted_iou)
        dt = clock() - t0
        if k >= 100:  # the first 100 map the parts and warm the caches
            times.append(dt)
    return times


def bench_masks(
    store: Store,
    source: dict[int, SourceSample],
    indices: Sequence[int],
    rounds: int,
    buffer: np.ndarray,
) -> dict[str, Any]:
    """Per sample, interleaved: our masks() (reused / fresh out), pycocotools -> (N, H, W) and
    raw, fill(0) and fill(1) of the same bytes; seconds summed over samples, per round."""
    per_case: dict[str, np.ndarray] = {}
    masks = total_bytes = 0
    for i in indices:
        s = store[i]
        rles = source[s.image_id].rles()
        out = flat_view(buffer, (len(s), s.height, s.width))
        cases = {
            "ours": lambda s=s, out=out: s.masks(out=out),
            "ours_fresh": lambda s=s: s.masks(),
            "coco_nhw": lambda rles=rles, out=out: coco_to_nhw(rles, out),
            "coco_raw": lambda rles=rles: mask_util.decode(rles),
            "fill0": lambda out=out: out.fill(0),
            "fill1": lambda out=out: out.fill(1),
        }
        times = measure_side_by_side(cases, rounds, warmup=0)
        for name, t in times.items():
            per_case[name] = per_case.get(name, np.zeros(rounds)) + np.array(t)
        masks += len(s)
        total_bytes += out.nbytes
    return {
        "round_seconds": {k: v.tolist() for k, v in per_case.items()},
        "masks": masks,
        "bytes": total_bytes,
        "samples": len(indices),
        "rounds": rounds,
    }


def bench_full(
    store: Store,
    files: dict[int, tuple[Path, Path]],
    indices: Sequence[int],
    rounds: int,
    buffer: np.ndarray,
) -> dict[str, list[float]]:
    """Seconds per whole sample (image + masks), ours vs the baseline reader, plus components."""
    out: dict[str, list[float]] = {}
    for i in indices:
        s = store[i]
        jpg, js = files[s.image_id]
        view = flat_view(buffer, (len(s), s.height, s.width))

        def ours(i: int = i, view: np.ndarray = view) -> None:
            sample = store[i]
            sample.image()
            sample.masks(out=view)

        def pil(jpg: Path = jpg) -> None:
            with Image.open(jpg) as im:
                np.asarray(im.convert("RGB"))

        def load_json(js: Path = js) -> None:
            with open(js, "rb") as f:
                json.load(f)

        cases = {
            "ours": ours,
            "baseline_nhw": lambda jpg=jpg, js=js, view=view: baseline_read(jpg, js, view),
            "baseline_raw": lambda jpg=jpg, js=js: baseline_read(jpg, js, None),
            "ours_image": lambda s=s: s.image(),
            "pil_image": pil,
            "json_load": load_json,
        }
        for name, t in measure_side_by_side(cases, rounds, warmup=0).items():
            out.setdefault(name, []).extend(t)
    return out


def check_outputs(store: Store, files: dict[int, tuple[Path, Path]], index: int) -> dict[str, Any]:
    """Untimed: do our outputs equal the baseline reader's for one sample?"""
    s = store[index]
    image, masks = baseline_read(*files[s.image_id], None)
    ours_image = s.image()
    diff = int(np.abs(ours_image.astype(np.int16) - image.astype(np.int16)).max())
    same_masks = bool(np.array_equal(s.masks(), masks.transpose(2, 0, 1)))
    return {"image_id": s.image_id, "masks_equal": same_masks, "image_max_abs_diff": diff}


def warm_up(store: Store, source: dict[int, SourceSample], index: int) -> None:
    """Load numba's cached kernels and pycocotools once so no timed call pays for it."""
    s = store[index]
    s.image()
    s.masks()
    rles = source[s.image_id].rles()
    if rles:
        mask_util.decode(rles[:1])


# ---------------------------------------------------------------------------------------------
# Rows


def _rate(count: float, seconds: Sequence[float]) -> float:
    return count / p50(seconds)


def metadata_rows(times: Sequence[float]) -> list[list[Any]]:
    us = [t * 1e6 for t in times]
    return [
        ["store[i] + 4 metadata fields", p50(us), "µs", p95(us), "", len(us),
         "Python calls: Spanner.locate, Sample(), 4 slices of mapped Arrow columns (views)"],
    ]  # fmt: skip


def masks_rows(res: dict[str, Any]) -> list[list[Any]]:
    sec = res["round_seconds"]
    n_masks, n_bytes, n = res["masks"], res["bytes"], res["rounds"]
    rate = {k: n_masks / p50(v) for k, v in sec.items()}
    gbs = {k: n_bytes / 1e9 / p50(v) for k, v in sec.items()}
    ours, nhw, raw = rate["ours"], rate["coco_nhw"], rate["coco_raw"]
    return [
        ["masks() ours, out= reused", ours, "masks/s", "-",
         f"{ours / nhw:.1f}x NHW, {ours / raw:.1f}x raw", n,
         f"{gbs['ours']:.1f} GB/s: output writes (row above + 1 flip per run boundary); "
         "string parsing: see bench_masks.py"],
        ["masks() ours, out=None", rate["ours_fresh"], "masks/s", "-",
         f"{rate['ours_fresh'] / ours:.2f}x out=", n,
         f"{gbs['ours_fresh']:.1f} GB/s: page faults of a fresh array (VM returns freed pages)"],
        ["pycocotools decode -> (N,H,W)", nhw, "masks/s", "-", "ref NHW", n,
         f"{gbs['coco_nhw']:.1f} GB/s: F-order expand into fresh pages + transposing copy"],
        ["pycocotools decode, raw (H,W,N)", raw, "masks/s", "-", "ref raw", n,
         f"{gbs['coco_raw']:.1f} GB/s: F-order expand into a fresh malloc (page faults)"],
        ["memset fill(0), same bytes", gbs["fill0"], "GB/s", "-",
         f"ours at {100 * gbs['ours'] / gbs['fill0']:.0f}%", n,
         "store bandwidth, 1 core; zeros are written faster than other bytes here"],
        ["memset fill(1), same bytes", gbs["fill1"], "GB/s", "-",
         f"ours at {100 * gbs['ours'] / gbs['fill1']:.0f}%", n,
         "store bandwidth, 1 core, non-zero bytes (masks are 0s and 1s)"],
    ]  # fmt: skip


def full_rows(res: dict[str, list[float]]) -> list[list[Any]]:
    ms = {k: [t * 1e3 for t in v] for k, v in res.items()}
    ours, nhw, raw = p50(ms["ours"]), p50(ms["baseline_nhw"]), p50(ms["baseline_raw"])
    img, pil, js = p50(ms["ours_image"]), p50(ms["pil_image"]), p50(ms["json_load"])
    n = len(ms["ours"])
    return [
        ["sample: image() + masks(out=)", ours, "ms", p95(ms["ours"]),
         f"{nhw / ours:.1f}x NHW, {raw / ours:.1f}x raw", n,
         f"image() (libjpeg-turbo) p50 {img:.1f} ms; the rest is masks()"],
        ["baseline: PIL+json+coco -> NHW", nhw, "ms", p95(ms["baseline_nhw"]), "ref NHW", n,
         f"pycocotools + transpose; PIL p50 {pil:.1f} ms, json.load p50 {js:.1f} ms"],
        ["baseline, masks left (H,W,N)", raw, "ms", p95(ms["baseline_raw"]), "ref raw", n,
         "the same without the transposing copy"],
    ]  # fmt: skip


# ---------------------------------------------------------------------------------------------


def summary(rows: list[list[Any]]) -> list[dict[str, Any]]:
    """The headline rows, in the run's summary schema."""
    out = []
    for measure, value, unit, p95_, ratio, n, note in rows:
        keep = ("store[i]", "masks() ours, out= reused", "pycocotools decode -> (N,H,W)",
                "memset fill(1)", "sample: image()", "baseline: PIL+json")  # fmt: skip
        if measure.startswith(keep):
            p95_value = p95_ if isinstance(p95_, float) else float("nan")
            out.append(summary_row(measure, value, unit, n=n, p95=p95_value, ratio=ratio,
                                   dominated=note))  # fmt: skip
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_input_args(p)
    p.add_argument("--samples", type=int, default=4, help="samples with masks (seeded draw)")
    p.add_argument("--rounds", type=int, default=3, help="rounds of the masks/sample benches")
    p.add_argument("--meta-repeats", type=int, default=3000)
    args = p.parse_args(argv)
    if args.smoke:
        args.samples, args.rounds, args.meta_repeats = 3, 2, 200
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    env = environment()
    tars = source_tars(args)
    print_header(f"bench_store: {input_description(args, tars)}", env)
    with work_dir(args.store) as tmp:
        work = Path(tmp)
        store = open_store(packed_store(args, tars, work))
        with_masks = [i for i in range(len(store)) if len(store[i]) > 0]
        indices = [with_masks[j] for j in spread(len(with_masks), args.samples, args.seed)]
        source = read_source(tars, {store[i].image_id for i in indices})
        files = extract(source, work / "extracted")
        warm_up(store, source, indices[0])
        buffer = reused_buffer(store, indices)
        print("metadata ...", flush=True)
        meta = bench_metadata(store, args.meta_repeats, args.seed)
        print("masks ...", flush=True)
        masks_res = bench_masks(store, source, indices, args.rounds, buffer)
        print("full samples ...", flush=True)
        full_res = bench_full(store, files, indices, args.rounds, buffer)
        check = check_outputs(store, files, indices[0])
        rows = metadata_rows(meta) + masks_rows(masks_res) + full_rows(full_res)
        del store, buffer
    print()
    table = print_table(HEADERS, rows)
    notes = [
        f"{len(indices)} samples with masks, {masks_res['masks']} masks; page cache warm for "
        f"every reader; outputs checked on image {check['image_id']}: masks equal="
        f"{check['masks_equal']}, image max |PIL - simplejpeg| = {check['image_max_abs_diff']}. "
        f"Masks: totals over the samples per round, median of {args.rounds} rounds; sample: "
        "p50/p95 over samples x rounds."
    ]
    print("\n" + notes[0])
    print(f"allocator: {env['allocator']}")
    result = {
        "environment": env,
        "args": args_dict(args),
        "rows": [dict(zip(HEADERS, r, strict=True)) for r in rows],
        "summary": summary(rows),
        "notes": notes,
        "check": check,
        "raw": {"metadata_s": meta, "masks": masks_res, "full_s": full_res},
        "table": table,
    }
    path = write_results("bench_store-smoke" if args.smoke else "bench_store", result, args.results)
    print(f"results: {path}")
    return result


if __name__ == "__main__":
    main()

"""`make bench`: what the packed store buys over reading SA-1B the usual way, in one run.

Packs synthetic full-size shards (1500 px short side, ~100 masks per image), then measures side
by side: packing speed, metadata access, mask decoding against pycocotools and against a
memset of the same bytes, and a whole sample against the usual reader over extracted files
(PIL + json + pycocotools). Every ratio comes from rounds that interleave both sides.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from common import (
    environment,
    flat_view,
    measure_side_by_side,
    p50,
    p95,
    print_header,
    print_table,
    synth_cached,
    write_results,
)
from PIL import Image
from pycocotools import mask as mask_util

from sa1b_pack import Store, open_store, pack

HEADERS = ("measure", "p50", "unit", "p95", "ratio", "n", "dominated by / notes")
MB = 1e6


@dataclass
class SourceSample:
    """One image of a source shard, as its tar members hold it."""

    image_id: int
    jpeg: bytes
    json: bytes

    def record(self) -> dict[str, Any]:
        return json.loads(self.json)

    def rles(self) -> list[dict[str, Any]]:
        """The annotations' RLE dicts as json.load gives them (counts are str)."""
        return [a["segmentation"] for a in self.record()["annotations"]]


def read_source(tars: Sequence[Path]) -> dict[int, SourceSample]:
    """Every image of the shards by image id, paired by basename (members are shuffled)."""
    found: dict[int, dict[str, bytes]] = {}
    for tar_path in tars:
        with tarfile.open(tar_path, "r:*") as tar:
            for info in tar:
                stem, _, ext = info.name.rsplit("/", 1)[-1].partition(".")
                if info.isfile() and stem.startswith("sa_") and ext in ("jpg", "json"):
                    reader = tar.extractfile(info)
                    assert reader is not None
                    found.setdefault(int(stem[3:]), {})[ext] = reader.read()
    return {k: SourceSample(k, v["jpg"], v["json"]) for k, v in found.items() if len(v) == 2}


def extract(source: dict[int, SourceSample], folder: Path) -> dict[int, tuple[Path, Path]]:
    """Write each sample's members as files, as a user who untars a shard has them."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for image_id, sample in source.items():
        jpg, js = folder / f"sa_{image_id}.jpg", folder / f"sa_{image_id}.json"
        jpg.write_bytes(sample.jpeg)
        js.write_bytes(sample.json)
        files[image_id] = (jpg, js)
    return files


def baseline_read(jpg: Path, js: Path, out: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The usual reader: PIL + json.load + pycocotools, masks copied to (N, H, W) if ``out``."""
    with Image.open(jpg) as im:
        image = np.asarray(im.convert("RGB"))
    with open(js, "rb") as f:
        record = json.load(f)
    rles = [a["segmentation"] for a in record["annotations"]]
    h, w = record["image"]["height"], record["image"]["width"]
    # pycocotools returns a garbage shape for an empty list, so an image without masks is special.
    masks = mask_util.decode(rles) if rles else np.zeros((h, w, 0), np.uint8)
    if out is None:
        return image, masks
    np.copyto(out, masks.transpose(2, 0, 1))
    return image, out


def coco_to_nhw(rles: list[dict[str, Any]], out: np.ndarray) -> np.ndarray:
    """pycocotools decode, then the (N, H, W) C-contiguous copy our reader gives directly."""
    np.copyto(out, mask_util.decode(rles).transpose(2, 0, 1))
    return out


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


def linked_shards(tars: Sequence[Path], copies: int, folder: Path) -> list[Path]:
    """``copies`` x the shards under new indices (hard links), for a pack run long enough to
    time: a 6-image shard packs in ~15 ms, too close to joblib's dispatch cost."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for k in range(copies * len(tars)):
        path = folder / f"sa_{k:06d}.tar"
        if not path.exists():
            try:
                os.link(tars[k % len(tars)], path)
            except OSError:
                shutil.copyfile(tars[k % len(tars)], path)
        out.append(path)
    return out


def bench_pack(tars: Sequence[Path], workdir: Path, repeats: int) -> dict[str, Any]:
    """pack(jobs=1) vs pack(jobs=2) into fresh stores, interleaved; stores deleted afterwards."""
    src, shards = tars[0].parent, [int(p.stem[3:]) for p in tars]
    made: list[Path] = []

    def run(jobs: int) -> Callable[[], None]:
        def go() -> None:
            dst = workdir / f"pack-j{jobs}-{len(made)}"
            made.append(dst)
            report = pack(src, dst, shards, jobs=jobs, progress=False)
            assert report.ok and not report.skipped_existing, report

        return go

    # Two warm-up rounds: the first starts the loky workers, the second lets them settle.
    times = measure_side_by_side({"jobs=1": run(1), "jobs=2": run(2)}, repeats, warmup=2)
    images = len(open_store(made[0]))
    for path in made:
        shutil.rmtree(path, ignore_errors=True)
    return {
        "times": times,
        "shards": len(tars),
        "images": images,
        "source_bytes": sum(p.stat().st_size for p in tars),
    }


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


def pack_rows(res: dict[str, Any]) -> list[list[Any]]:
    times = res["times"]
    speedup = p50(times["jobs=1"]) / p50(times["jobs=2"])
    notes = {
        "jobs=1": "Python per-field JSON validation (annotation.py), then sha256 + fsync",
        "jobs=2": "one shard per warm loky worker; 2 cores, so at most 2x",
    }
    return [
        [f"pack {name}", res["images"] / p50(t), "images/s", "-",
         f"{speedup:.2f}x jobs=1" if name == "jobs=2" else "ref", len(t),
         f"{res['source_bytes'] / MB / p50(t):.0f} MB/s of tar; {notes[name]}"]
        for name, t in times.items()
    ]  # fmt: skip


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


def size_rows(store: Store, source: dict[int, SourceSample]) -> list[list[Any]]:
    info = store.info()
    parts = [store.part(p) for p in range(len(store.shards))]
    jpeg_bin = sum(p.jpeg.nbytes for p in parts)
    counts_bin = sum(p.counts.nbytes for p in parts)
    src_json = sum(len(s.json) for s in source.values())
    counts = sum(len(r["counts"]) for s in source.values() for r in s.rles())
    tables = info["store_bytes"] - jpeg_bin - counts_bin
    ratio = info["store_bytes"] / info["source_bytes"]
    return [
        ["store bytes / source tar bytes", ratio, "ratio", "-", "", 1,
         f"{info['store_bytes'] / MB:.1f} MB / {info['source_bytes'] / MB:.1f} MB"],
        ["  jpeg.bin / source JPEG members", jpeg_bin / sum(len(s.jpeg) for s in source.values()),
         "ratio", "-", "", 1, "JPEG bytes kept as-is"],
        ["  counts.bin / source RLE strings", counts_bin / counts, "ratio", "-", "", 1,
         f"COCO strings kept as-is ({counts_bin / MB:.1f} MB vs {counts / MB:.1f} MB); "
         "uint32 runs: see bench_masks.py"],
        ["  tables / source JSON", tables / src_json, "ratio", "-", "", 1,
         f"Arrow IPC (mapped) + Parquet of every field ({tables / MB:.2f} MB vs "
         f"{src_json / MB:.2f} MB)"],
    ]  # fmt: skip


# ---------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shards", type=int, default=2)
    p.add_argument("--images", type=int, default=6, help="images per shard")
    p.add_argument("--rounds", type=int, default=4, help="rounds of the masks/sample benches")
    p.add_argument("--pack-repeats", type=int, default=5)
    p.add_argument("--pack-copies", type=int, default=4, help="pack each shard this many times")
    p.add_argument("--meta-repeats", type=int, default=3000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", type=Path, default=None, help="synthetic shards cache folder")
    p.add_argument("--results", type=Path, default=None, help="results folder")
    p.add_argument("--smoke", "--quick", action="store_true", help="tiny images, for tests")
    args = p.parse_args(argv)
    if args.smoke:
        args.images, args.rounds, args.pack_repeats, args.meta_repeats = 3, 2, 1, 200
        args.pack_copies = 1
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    env = environment()
    size = "small synthetic images (smoke)" if args.smoke else "full-size synthetic SA-1B"
    print_header(f"bench_store: {args.shards} shards x {args.images} images, {size}", env)
    tars = synth_cached(
        args.shards, args.images, small=args.smoke, seed=args.seed, cache=args.cache
    )
    with tempfile.TemporaryDirectory(prefix="sa1b-bench-") as tmp:
        work = Path(tmp)
        # Packing first: freeing big arrays costs this VM CPU for a while after (pages go back
        # to the host), which would land on the pack workers.
        print("packing ...", flush=True)
        linked = linked_shards(tars, args.pack_copies, work / "linked")
        pack_res = bench_pack(linked, work, args.pack_repeats)
        source = read_source(tars)
        files = extract(source, work / "extracted")
        pack(tars[0].parent, work / "store", [int(p.stem[3:]) for p in tars], progress=False)
        store = open_store(work / "store")
        indices = [i for i in range(len(store)) if len(store[i]) > 0]
        warm_up(store, source, indices[0])
        buffer = reused_buffer(store, indices)
        print("metadata ...", flush=True)
        meta = bench_metadata(store, args.meta_repeats, args.seed)
        print("masks ...", flush=True)
        masks_res = bench_masks(store, source, indices, args.rounds, buffer)
        print("full samples ...", flush=True)
        full_res = bench_full(store, files, range(len(store)), args.rounds, buffer)
        check = check_outputs(store, files, indices[0])
        rows = (
            pack_rows(pack_res)
            + metadata_rows(meta)
            + masks_rows(masks_res)
            + full_rows(full_res)
            + size_rows(store, source)
        )
        n_images, n_masks = len(store), store.num_masks
        del store, buffer
    print()
    table = print_table(HEADERS, rows)
    print(
        f"\n{n_images} images, {n_masks} masks; page cache warm for every reader; "
        f"outputs checked on image {check['image_id']}: masks equal={check['masks_equal']}, "
        f"image max |PIL - simplejpeg| = {check['image_max_abs_diff']}"
    )
    print(
        f"pack: {pack_res['shards']} shards ({args.pack_copies} hard-linked copies of each "
        f"source shard), median of {args.pack_repeats}; masks: totals over "
        f"{masks_res['samples']} samples per round, median of {args.rounds} rounds; "
        f"sample: p50/p95 over samples x rounds"
    )
    print(f"allocator: {env['allocator']}")
    result = {
        "environment": env,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "rows": [dict(zip(HEADERS, r, strict=True)) for r in rows],
        "check": check,
        "raw": {"pack": pack_res, "metadata_s": meta, "masks": masks_res, "full_s": full_res},
        "table": table,
    }
    path = write_results("bench_store-smoke" if args.smoke else "bench_store", result, args.results)
    print(f"results: {path}")
    return result


if __name__ == "__main__":
    main()

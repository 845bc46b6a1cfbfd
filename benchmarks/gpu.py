"""Device check of SA1BLoader(device="cuda"), on one GPU, in under 10 minutes, no network.

    python benchmarks/gpu.py                  # needs a CUDA device and sa1b-pack[gpu]
    python benchmarks/gpu.py --json out.json  # also write the numbers
    python benchmarks/gpu.py --device cpu --smoke   # the script's own test, on the CPU

It synthesizes its own SA-1B-like shards (sa1b_pack.testing.synth, full size: 1500 x 2250
class images, ~100 masks each), packs them, then checks and measures:
  1. masks bit-exact against the CPU loader (same sampler), every other field exact;
  2. images: mean absolute difference against the CPU loader (unpadded pixels, per image);
  3. samples/s and CPU milliseconds per sample (process CPU time / samples, every thread)
     for batch 8, 32 and 64 with up to 64 masks at 256 (images 1024), against the threaded
     CPU loader on the same machine;
  4. GPU memory (memory_allocated, max_memory_allocated) over 2,000 batches: flat or not.
Not part of `make bench` (CI has no GPU); docs/gpu.md says how to read it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import numpy as np
import torch

from sa1b_pack.testing import synth
from sa1b_pack.torch import SA1BDataset, SA1BLoader
from sa1b_pack.write.packer import pack

CPUS = os.cpu_count() or 1


def fail(message: str) -> None:
    print(f"benchmarks/gpu.py: {message}", file=sys.stderr)
    raise SystemExit(2)


def check_device(device: str) -> None:
    """Exit with a clear message where the device path cannot run here."""
    if device == "cpu":
        return
    if not torch.cuda.is_available():
        fail(f"no CUDA device (torch {torch.__version__}, CUDA build: {torch.version.cuda}); "
             "this script checks the GPU path: run it on a machine with a GPU, or with "
             "--device cpu --smoke to test the script itself")  # fmt: skip
    try:
        from nvidia import nvimgcodec  # noqa: F401
    except ImportError:
        fail("nvImageCodec is not installed: pip install 'sa1b-pack[gpu]' (CUDA 12 torch) "
             "or 'sa1b-pack[gpu-cu13]' (CUDA 13)")  # fmt: skip


def make_store(work: Path, smoke: bool) -> Path:
    shards, per_shard = (2, 6) if smoke else (4, 64)
    synth.synth_shards(work / "src", range(shards), per_shard, small=smoke, seed=7,
                       jobs=min(CPUS, shards), progress=False)  # fmt: skip
    report = pack(work / "src", work / "store", list(range(shards)), progress=False)
    if not report.ok:
        fail(f"packing the synthetic shards failed: {report}")
    return work / "store"


def keys(ds: SA1BDataset, batches: int, batch_size: int) -> list[tuple[int, int]]:
    """(index, epoch) keys for ``batches`` full batches, epoch after epoch (new mask draws)."""
    out: list[tuple[int, int]] = []
    epoch = 0
    while len(out) < batches * batch_size:
        order = np.random.default_rng((1, epoch)).permutation(len(ds))
        out += [(int(i), epoch) for i in order]
        epoch += 1
    return out[: batches * batch_size]


def sync(device: str) -> None:
    if device != "cpu":
        torch.cuda.synchronize()


def exactness(ds: SA1BDataset, device: str, batches: int) -> dict:
    """Masks and fields against the CPU loader, and the images' mean absolute difference."""
    order = keys(ds, batches, 8)
    want = SA1BLoader(ds, 8, sampler=order, copy=True)
    got = SA1BLoader(ds, 8, sampler=order, device=device, threads=min(CPUS, 8))
    masks = bad_masks = bad_fields = 0
    mads: list[float] = []
    for a, b in zip(got, want, strict=True):
        a = {k: v.cpu() for k, v in a.items()}
        same = (a["masks"] == b["masks"]).flatten(2).all(2)
        masks += int(b["mask_valid"].sum())
        bad_masks += int((~same).sum())
        for key in b.keys() - {"image", "masks"}:
            bad_fields += not torch.equal(torch.nan_to_num(a[key]), torch.nan_to_num(b[key]))
        for g, w, (h, wd) in zip(a["image"], b["image"], b["input_size"].tolist(), strict=True):
            diff = (g[:, :h, :wd].int() - w[:, :h, :wd].int()).abs()
            mads.append(float(diff.float().mean()))
            bad_fields += bool(g[:, h:].any() or g[:, :, wd:].any())  # padding must be 0
    return {"masks_compared": masks, "masks_different": bad_masks,
            "fields_or_padding_different": bad_fields, "image_mad_mean": float(np.mean(mads)),
            "image_mad_max": float(np.max(mads)), "decoded": dict(got.device_stats)}  # fmt: skip


def throughput(ds: SA1BDataset, batch_size: int, device: str | None, batches: int,
               warmup: int) -> dict:  # fmt: skip
    """samples/s and CPU ms per sample over ``batches`` batches after ``warmup`` ones."""
    threads = min(CPUS, 8) if device else CPUS
    loader = SA1BLoader(ds, batch_size, sampler=keys(ds, batches + warmup, batch_size),
                        threads=threads, device=device)  # fmt: skip
    it = iter(loader)
    for _ in range(warmup):
        next(it)
    sync(device or "cpu")
    wall, cpu = time.perf_counter(), time.process_time()
    n = 0
    for batch in it:
        n += len(batch["image_id"])
    sync(device or "cpu")
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"loader": f"device={device}" if device else f"CPU, {threads} threads",
            "batch": batch_size, "threads": threads, "samples": n,
            "samples_per_s": n / wall, "cpu_ms_per_sample": 1000 * cpu / n}  # fmt: skip


def memory(ds: SA1BDataset, device: str, batches: int, batch_size: int, limit_s: float) -> dict:
    """GPU memory after every 100th batch over ``batches`` batches (stops at ``limit_s``)."""
    loader = SA1BLoader(ds, batch_size, sampler=keys(ds, batches, batch_size), device=device,
                        threads=min(CPUS, 8))  # fmt: skip
    trace, start, n = [], time.perf_counter(), 0
    if device != "cpu":
        torch.cuda.reset_peak_memory_stats()
    for n, batch in enumerate(loader, 1):
        batch["masks"].any()  # the consumer uses the batch, as a training step would
        if n % 100 == 0 or n == 1:
            sync(device)
            allocated = torch.cuda.memory_allocated() if device != "cpu" else 0
            peak = torch.cuda.max_memory_allocated() if device != "cpu" else 0
            trace.append((n, allocated / 2**20, peak / 2**20))
        if time.perf_counter() - start > limit_s:
            break
    after = [t for t in trace if t[0] >= 100] or trace
    growth = after[-1][1] - after[0][1]
    return {"batches": n, "batch": batch_size, "allocated_mib": [round(t[1], 1) for t in trace],
            "peak_mib": round(trace[-1][2], 1), "growth_after_batch_100_mib": round(growth, 1),
            "flat": abs(growth) <= 0.01 * max(after[0][1], 1.0) + 1.0}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: tests the script")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--work", type=Path, help="folder for the shards and store (kept)")
    args = parser.parse_args()
    check_device(args.device)
    smoke = args.smoke
    recipe = (dict(image_size=64, mask_size=16, max_masks=8) if smoke else
              dict(image_size=1024, mask_size=256, max_masks=64))  # fmt: skip
    with TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        t0 = time.perf_counter()
        ds = SA1BDataset(make_store(work, smoke), **recipe)
        print(f"store: {len(ds)} images ({time.perf_counter() - t0:.0f} s to make), recipe "
              f"{recipe}, device {args.device}, {CPUS} CPUs", flush=True)  # fmt: skip
        out = {"device": torch.cuda.get_device_name() if args.device != "cpu" else "cpu",
               "recipe": recipe, "cpus": CPUS, "torch": torch.__version__}  # fmt: skip
        out["exactness"] = exactness(ds, args.device, 2 if smoke else 16)
        print(json.dumps(out["exactness"], default=str), flush=True)
        rows = []
        for batch_size in (8, 32, 64):
            n = 2 if smoke else max(8, 1536 // batch_size)
            for device in (args.device, None):
                rows.append(throughput(ds, batch_size, device, n, 1 if smoke else 3))
                print(json.dumps(rows[-1]), flush=True)
        out["throughput"] = rows
        out["memory"] = memory(ds, args.device, 20 if smoke else 2000, 32,
                               limit_s=30 if smoke else 240)  # fmt: skip
        print(json.dumps(out["memory"]), flush=True)
    print("\n| loader | batch | samples/s | CPU ms/sample |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['loader']} | {r['batch']} | {r['samples_per_s']:.0f} | "
              f"{r['cpu_ms_per_sample']:.2f} |")  # fmt: skip
    e, m = out["exactness"], out["memory"]
    print(f"\nmasks different: {e['masks_different']} of {e['masks_compared']}; fields or "
          f"padding different: {e['fields_or_padding_different']}; image MAD mean "
          f"{e['image_mad_mean']:.3f}, max {e['image_mad_max']:.3f}; decoded: {e['decoded']}\n"
          f"GPU memory over {m['batches']} batches of {m['batch']}: peak {m['peak_mib']} MiB, "
          f"growth after batch 100 {m['growth_after_batch_100_mib']} MiB "
          f"({'flat' if m['flat'] else 'NOT flat'})")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=str))
    if e["masks_different"] or e["fields_or_padding_different"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()

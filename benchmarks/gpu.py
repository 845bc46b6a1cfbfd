"""Decoding on the GPU: SA1BLoader(device="cuda") against the threaded CPU loader on the same
machine, on the run's store (images 1024, up to 64 masks at 256): masks bit-exact and every
other field equal, the images' mean absolute difference, samples/s and CPU ms per sample at
batch 8, 32 and 64, GPU memory over 2,000 batches. `python benchmarks/run.py --only gpu` on a
machine with a GPU and sa1b-pack[gpu]; skipped (with the reason) without one. The smoke run
takes the same path with device="cpu": it tests the script, not a GPU. See docs/gpu.md.
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch
from harness import Ctx, Result, question, row

from sa1b_pack.torch import SA1BDataset, SA1BLoader

CPUS = os.cpu_count() or 1


def unavailable(device: str) -> str | None:
    """Why the device path cannot run here, or None."""
    if device == "cpu":
        return None
    if not torch.cuda.is_available():
        return (f"no CUDA device (torch {torch.__version__}, CUDA build: {torch.version.cuda}); "
                "run it on a machine with a GPU")  # fmt: skip
    try:
        from nvidia import nvimgcodec  # noqa: F401
    except ImportError:
        return ("nvImageCodec is not installed: pip install 'sa1b-pack[gpu]' (CUDA 12 torch) "
                "or 'sa1b-pack[gpu-cu13]' (CUDA 13)")  # fmt: skip
    return None


def keys(ds: SA1BDataset, batches: int, batch_size: int) -> list[tuple[int, int]]:
    """(index, epoch) keys for ``batches`` full batches, epoch after epoch (new mask draws)."""
    need = batches * batch_size
    return [(int(i), e) for e in range(-(-need // len(ds)))
            for i in np.random.default_rng((1, e)).permutation(len(ds))][:need]  # fmt: skip


def sync(device: str | None) -> None:
    if device not in (None, "cpu"):
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
            "fields_or_padding_different": bad_fields, "mads": mads,
            "decoded": dict(got.device_stats)}  # fmt: skip


def throughput(ds: SA1BDataset, batch_size: int, device: str | None, batches: int,
               warmup: int) -> dict:  # fmt: skip
    """samples/s and CPU ms per sample over ``batches`` batches after ``warmup`` ones."""
    threads = min(CPUS, 8) if device else CPUS
    loader = SA1BLoader(ds, batch_size, sampler=keys(ds, batches + warmup, batch_size),
                        threads=threads, device=device)  # fmt: skip
    it = iter(loader)
    for _ in range(warmup):
        next(it)
    sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    n = 0
    for batch in it:
        n += len(batch["image_id"])
    sync(device)
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


@question("gpu", "Decoding on the GPU: are the batches exact, how many samples/s at what CPU "
          "cost per sample against the threaded CPU loader, and is GPU memory flat?")  # fmt: skip
def gpu(ctx: Ctx) -> Result:
    device = "cpu" if ctx.smoke else "cuda"
    if why := unavailable(device):
        return Result(skipped=[why])
    recipe = dict(image_size=ctx.size(1024, 64), mask_size=ctx.size(256, 16),
                  max_masks=ctx.size(64, 8))  # fmt: skip
    ds = SA1BDataset(ctx.store, **recipe)
    e = exactness(ds, device, ctx.size(16, 2))
    rows = [row("masks that differ from the CPU loader's", [e["masks_different"]], "masks", "",
                f"of {e['masks_compared']:,} compared, bit for bit"),
            row("other fields or padding that differ", [e["fields_or_padding_different"]],
                "fields", "", "every key of the batch but image and masks, exactly"),
            row("image, mean absolute difference", e["mads"], "levels", "",
                f"per image, unpadded pixels, 0-255; decoded: {e['decoded']}")]  # fmt: skip
    for batch in (8, 32, 64):
        n = ctx.size(max(8, 1536 // batch), 2)
        ours, cpu = (throughput(ds, batch, d, n, ctx.size(3, 1)) for d in (device, None))
        for r in (ours, cpu):
            rel = "ref" if r is cpu else f"{r['samples_per_s'] / cpu['samples_per_s']:.2f}x CPU"
            rows += [row(f"{r['loader']}, batch {batch}", [r["samples_per_s"]], "samples/s", rel,
                         f"{r['samples']} samples"),
                     row(f"CPU time per sample, {r['loader']}, batch {batch}",
                         [r["cpu_ms_per_sample"]], "ms", what="process CPU / samples")]  # fmt: skip
    m = memory(ds, device, ctx.size(2000, 20), 32, limit_s=ctx.size(240, 30))
    rows += [row("GPU memory allocated, every 100 batches", m["allocated_mib"], "MiB", "",
                 f"{m['batches']} batches of {m['batch']}; peak {m['peak_mib']} MiB"),
             row("GPU memory growth after batch 100", [m["growth_after_batch_100_mib"]], "MiB",
                 "", "flat" if m["flat"] else "NOT flat")]  # fmt: skip
    notes = [f"device {torch.cuda.get_device_name() if device != 'cpu' else 'cpu (smoke)'}, "
             f"{CPUS} CPUs, torch {torch.__version__}; recipe {recipe}; the device loader uses "
             f"{min(CPUS, 8)} threads, the CPU loader {CPUS}."]  # fmt: skip
    return Result(rows, notes)

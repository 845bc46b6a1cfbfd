"""What can this machine do at all? The ceilings every other number is judged against.

memset and memcpy bandwidth on reused buffers (one core), sequential file read with the page
cache warm and cold (posix_fadvise DONTNEED before each cold read), and the decode time of one
~1500 px SA-1B JPEG by simplejpeg (libjpeg-turbo; full size and DCT-scaled to 1/2, what the
1024 training recipe decodes) and by PIL.
"""

from __future__ import annotations

import argparse
import io
import os
import tarfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import simplejpeg
from baselines import member_key
from common import (
    add_input_args,
    args_dict,
    environment,
    evict,
    input_description,
    latency_row,
    measure_side_by_side,
    p50,
    p95,
    print_header,
    print_summary,
    source_tars,
    summary_row,
    work_dir,
    write_results,
)
from PIL import Image

MIB = 1 << 20
GB = 1e9
CHUNK = 8 * MIB


def bench_memory(mib: int, repeats: int) -> dict[str, list[float]]:
    """Seconds per fill(0), fill(1) and copy of ``mib`` MiB, buffers reused and faulted in."""
    src = np.empty(mib * MIB, np.uint8)
    dst = np.empty_like(src)
    src.fill(7)
    dst.fill(7)  # fault every page in now, not inside a timed call
    cases = {
        "memset fill(0)": lambda: dst.fill(0),
        "memset fill(1)": lambda: dst.fill(1),
        "memcpy": lambda: np.copyto(dst, src),
    }
    return measure_side_by_side(cases, repeats, warmup=1)


def read_file(path: Path, buffer: np.ndarray) -> int:
    """Read the whole file sequentially in 8 MiB chunks into a reused buffer; bytes read."""
    view = memoryview(buffer)
    total = 0
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(view):
            total += n
    return total


def bench_read(folder: Path, mib: int, repeats: int, cold_repeats: int) -> dict[str, Any]:
    """Seconds per sequential read of a fresh ``mib`` MiB file, warm, then cold (evicted)."""
    path = folder / "limits-read.bin"
    block = (np.arange(CHUNK, dtype=np.uint32) * 2654435761 >> 13).astype(np.uint8)
    with open(path, "wb") as f:
        for _ in range(mib * MIB // CHUNK):
            f.write(block.tobytes())
        f.flush()
        os.fsync(f.fileno())  # clean pages: DONTNEED can drop them
    buffer = np.empty(CHUNK, np.uint8)
    buffer.fill(0)
    read_file(path, buffer)  # warm
    warm = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        read_file(path, buffer)
        warm.append(time.perf_counter() - t0)
    cold = []
    for _ in range(cold_repeats):
        evict([path])
        t0 = time.perf_counter()
        read_file(path, buffer)
        cold.append(time.perf_counter() - t0)
    size = path.stat().st_size
    path.unlink()
    return {"bytes": size, "warm_s": warm, "cold_s": cold}


def first_jpeg(tars: Sequence[Path]) -> bytes:
    """The first .jpg member of the first shard: a real-sized SA-1B image."""
    with tarfile.open(tars[0], "r:*") as tar:
        for info in tar:
            key = member_key(info.name) if info.isfile() else None
            if key is not None and key[1] == "jpg":
                reader = tar.extractfile(info)
                assert reader is not None
                return reader.read()
    raise SystemExit(f"no .jpg member in {tars[0]}")


def bench_jpeg(jpeg: bytes, repeats: int) -> dict[str, list[float]]:
    """Seconds per decode of one JPEG to RGB, side by side."""

    def pil() -> None:
        with Image.open(io.BytesIO(jpeg)) as im:
            np.asarray(im.convert("RGB"))

    cases = {
        "simplejpeg": lambda: simplejpeg.decode_jpeg(jpeg, colorspace="RGB"),
        "simplejpeg 1/2 DCT": lambda: simplejpeg.decode_jpeg(
            jpeg, colorspace="RGB", min_height=1, min_width=1, min_factor=2
        ),
        "PIL": pil,
    }
    return measure_side_by_side(cases, repeats, warmup=1)


def rows(mem: dict, mib: int, read: dict, jpeg: dict, shape: tuple[int, int, int]) -> list[dict]:
    gbs = {k: [mib * MIB / GB / t for t in v] for k, v in mem.items()}
    fill1 = p50(gbs["memset fill(1)"])
    out = [
        summary_row(k, p50(v), "GB/s", n=len(v), p95=p95(v),
                    ratio=f"{p50(v) / fill1:.2f}x fill(1)" if k != "memset fill(1)" else "ref",
                    dominated=f"1 core, {mib} MiB reused buffer" + (
                        "; zero cache lines are written faster here" if "(0)" in k else ""))
        for k, v in gbs.items()
    ]  # fmt: skip
    size = read["bytes"]
    warm = [size / GB / t for t in read["warm_s"]]
    cold = [size / GB / t for t in read["cold_s"]]
    out += [
        summary_row("sequential read, page cache warm", p50(warm), "GB/s", n=len(warm),
                    p95=p95(warm), ratio=f"{p50(warm) / fill1:.2f}x fill(1)",
                    dominated=f"copy from the page cache, {size // MIB} MiB file, 8 MiB reads"),
        summary_row("sequential read, cold", p50(cold), "GB/s", n=len(cold), p95=p95(cold),
                    ratio=f"{p50(warm) / p50(cold):.1f}x slower than warm",
                    dominated="the disk after posix_fadvise DONTNEED (a VM host may still "
                    "cache it)"),
    ]  # fmt: skip
    h, w, _ = shape
    ref = p50(jpeg["simplejpeg"])
    notes = {
        "simplejpeg": "libjpeg-turbo, full size",
        "simplejpeg 1/2 DCT": "libjpeg-turbo scaled in the IDCT: the 1024 recipe's decode",
        "PIL": "libjpeg(-turbo) via Pillow, + RGB convert",
    }
    for name, seconds in jpeg.items():
        ratio = "ref" if name == "simplejpeg" else f"{p50(seconds) / ref:.2f}x simplejpeg"
        out.append(
            latency_row(f"JPEG decode {w}x{h}, {name}", seconds, ratio=ratio,
                        dominated=f"{notes[name]}; {h * w / 1e6 / p50(seconds):.0f} MPix/s")
        )  # fmt: skip
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_input_args(p)
    p.add_argument("--mib", type=int, default=256, help="memory buffer and read file size")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--cold-repeats", type=int, default=3)
    p.add_argument("--jpeg-repeats", type=int, default=15)
    p.add_argument("--dir", type=Path, help="folder for the read test file (default: scratch)")
    args = p.parse_args(argv)
    if args.smoke:
        args.mib, args.repeats, args.cold_repeats, args.jpeg_repeats = 8, 2, 1, 2
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    env = environment()
    tars = source_tars(args)
    print_header(f"limits: this machine's ceilings ({input_description(args, tars)})", env)
    jpeg = first_jpeg(tars)
    shape = (*simplejpeg.decode_jpeg_header(jpeg)[:2], 3)
    print("memory ...", flush=True)
    mem = bench_memory(args.mib, args.repeats)
    print("sequential read ...", flush=True)
    with work_dir(args.dir or args.store) as tmp:
        read = bench_read(Path(args.dir or tmp), args.mib, args.repeats, args.cold_repeats)
    print("JPEG decode ...", flush=True)
    dec = bench_jpeg(jpeg, args.jpeg_repeats)
    summary = rows(mem, args.mib, read, dec, shape)
    print()
    table = print_summary(summary)
    notes = [
        f"Memory: {args.repeats} repeats on {args.mib} MiB buffers, 1 core. Read: one file "
        f"written and fsynced, {args.repeats} warm reads, {args.cold_repeats} cold ones "
        f"(posix_fadvise DONTNEED before each). JPEG: one {shape[1]}x{shape[0]} image of "
        f"{len(jpeg) / 1e6:.2f} MB, {args.jpeg_repeats} decodes each, interleaved."
    ]
    print("\n" + notes[0])
    print(f"allocator: {env['allocator']}")
    result = {
        "environment": env,
        "args": args_dict(args),
        "summary": summary,
        "notes": notes,
        "raw": {"memory_s": mem, "read": read, "jpeg_s": dec, "jpeg_bytes": len(jpeg)},
        "table": table,
    }
    path = write_results("limits-smoke" if args.smoke else "limits", result, args.results)
    print(f"results: {path}")
    return result


if __name__ == "__main__":
    main()

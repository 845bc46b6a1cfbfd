"""This machine's ceilings: memset bandwidth, sequential file reads warm and cold, JPEG decode."""

from __future__ import annotations

import os

import numpy as np
import simplejpeg
from harness import Ctx, Result, faulted, latency, p50, question, ratio, row, side_by_side, x

from sa1b_pack import open_store

MIB, CHUNK = 1 << 20, 8 << 20


def evict(path) -> None:
    """Drop the file's clean pages from the page cache (no root needed; nothing maps the file).
    A VM's host may still cache the disk: "cold" is cold for the guest."""
    with open(path, "rb") as f:
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def read_all(path, buffer: memoryview) -> None:
    with open(path, "rb", buffering=0) as f:
        while f.readinto(buffer):
            pass


@question("limits", "What can this machine do at all? The ceilings every other number is "
          "judged against.")  # fmt: skip
def limits(ctx: Ctx) -> Result:
    mib, rounds, cold_rounds = ctx.size(256, 8), ctx.size(10, 2), ctx.size(3, 1)
    buf = faulted(mib * MIB)
    fill1 = [mib * MIB / 1e9 / t for t in side_by_side({"1": lambda: buf.fill(1)}, rounds)["1"]]

    path = ctx.work / "limits-read.bin"  # beside the store: the same disk
    block = np.random.default_rng(0).integers(0, 256, CHUNK, np.uint8).tobytes()
    with open(path, "wb") as f:
        for _ in range(max(1, mib * MIB // CHUNK)):
            f.write(block)
        os.fsync(f.fileno())  # clean pages: DONTNEED can drop them
    size, view = path.stat().st_size, memoryview(faulted(CHUNK))
    warm = side_by_side({"warm": lambda: read_all(path, view)}, rounds)["warm"]
    cold = []
    for _ in range(cold_rounds):
        evict(path)
        cold += side_by_side({"cold": lambda: read_all(path, view)}, 1, warmup=0)["cold"]
    path.unlink()

    jpeg = bytes(open_store(ctx.store)[0].jpeg)  # the first shard's first JPEG, unmodified
    hgt, wid = simplejpeg.decode_jpeg_header(jpeg)[:2]
    dec = side_by_side({
        "full": lambda: simplejpeg.decode_jpeg(jpeg, colorspace="RGB"),
        "half": lambda: simplejpeg.decode_jpeg(jpeg, colorspace="RGB", min_height=1,
                                               min_width=1, min_factor=2),
    }, ctx.size(15, 2))  # fmt: skip
    rows = [
        row("memset fill(1)", fill1, "GB/s", "ref", f"1 core, {mib} MiB reused buffer; masks are "
            "0s and 1s (the masks question: the same bytes as its masks)"),
        row("sequential read, warm", [size / 1e9 / t for t in warm], "GB/s", "ref",
            f"{size // MIB} MiB file, 8 MiB reads, from the page cache"),
        row("sequential read, cold", [size / 1e9 / t for t in cold], "GB/s",
            f"{x(p50(cold) / p50(warm))} warm's time", "after posix_fadvise DONTNEED"),
        latency(f"JPEG decode, full {wid}x{hgt}", dec["full"], "ref", "simplejpeg"),
        latency("JPEG decode, 1/2 DCT", dec["half"], f"{x(ratio(dec['half'], dec['full']))} full's",
                "simplejpeg min_factor=2: the 1024 recipe's decode"),
    ]  # fmt: skip
    notes = [f"memset: {rounds} rounds; read: {rounds} warm reads, {cold_rounds} "
             f"cold (each after eviction); JPEG: one {len(jpeg) / 1e6:.2f} MB image of the "
             "first shard, decoders interleaved."]  # fmt: skip
    return Result(rows, notes=notes)

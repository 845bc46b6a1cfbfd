"""Pack rate with 1 job and one per core, peak RSS, and the store's bytes against the tars'."""

from __future__ import annotations

import multiprocessing
import os
import resource
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from harness import Ctx, Result, p50, pack_store, question, ratio, row, side_by_side, x

from sa1b_pack.store.format import COUNTS_PAYLOAD, JPEG_PAYLOAD, PARTS_DIR

MB = 1e6


def linked(tars: list[Path], copies: int, folder: Path) -> list[Path]:
    """``copies`` x the shards under new indices (hard links): a pack long enough to time."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for k in range(copies * len(tars)):
        path = folder / f"sa_{k:06d}.tar"
        try:
            os.link(tars[k % len(tars)], path)
        except OSError:
            shutil.copyfile(tars[k % len(tars)], path)
        out.append(path)
    return out


def pack_child(tars: list[Path], jobs: int, rounds: int, work: Path) -> dict:
    """In a fresh process (its peak RSS is the packer's): 1 job vs ``jobs``, interleaved."""
    from joblib.externals.loky import get_reusable_executor

    made = iter(range(1 << 30))

    def go(n: int):
        return lambda: shutil.rmtree(pack_store(tars, work / f"p{next(made)}", jobs=n))

    times = side_by_side({"1 job": go(1), f"{jobs} jobs": go(jobs)}, rounds)
    get_reusable_executor().shutdown(wait=True)  # workers exit: RUSAGE_CHILDREN sees them
    kib = (
        resource.getrusage(w).ru_maxrss for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    )
    return {"times": times, "rss_mb": [k / 1024 for k in kib]}


@question("pack", "How fast does packing go, per core and with every core, in how much memory, "
          "into how many bytes?")  # fmt: skip
def pack_rate(ctx: Ctx) -> Result:
    jobs, copies, rounds = os.cpu_count() or 1, ctx.size(2, 1, 1), ctx.size(5, 1, 1)
    tars = linked(ctx.tars, copies, ctx.work / "pack-linked")
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=spawn) as pool:
        res = pool.submit(pack_child, tars, jobs, rounds, ctx.work / "pack-out").result()
    tar_mb = sum(p.stat().st_size for p in tars) / MB
    shutil.rmtree(ctx.work / "pack-linked")
    from sa1b_pack import open_store

    images = len(open_store(ctx.store)) * copies
    one, many = res["times"]["1 job"], res["times"][f"{jobs} jobs"]
    files = [p for p in ctx.store.rglob("*") if p.is_file()]
    total = sum(p.stat().st_size for p in files)
    kinds = {name: sum(p.stat().st_size for p in files if p.name == name)
             for name in (JPEG_PAYLOAD, COUNTS_PAYLOAD)}  # fmt: skip
    tables = sum(p.stat().st_size for p in files if PARTS_DIR in p.parts) - sum(kinds.values())
    split = ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in (*kinds.items(),
                      ("tables", tables)))  # fmt: skip
    src_bytes = sum(p.stat().st_size for p in ctx.tars)
    rows = [
        row("pack, 1 job, MB/s of tar", [tar_mb / t for t in one], "MB/s", "ref",
            f"{images / p50(one):.0f} images/s; {images} images per pack"),
        row(f"pack, {jobs} jobs, MB/s of tar", [tar_mb / t for t in many], "MB/s",
            f"{x(ratio(one, many))} 1 job", "one shard per loky worker"),
        row("peak RSS, packing process", [res["rss_mb"][0]], "MB", what="1-job packs run in it"),
        row(f"peak RSS, largest worker ({jobs} jobs)", [res["rss_mb"][1]], "MB",
            what="interpreter and imports included"),
        row("store bytes / tar bytes", [total / src_bytes], "ratio", what=split + " of the store"),
    ]  # fmt: skip
    notes = [
        f"{len(tars)} shards ({copies} hard-linked copies of each), {tar_mb:.0f} MB of tar "
        f"per pack; {rounds} interleaved rounds after 1 untimed, in a fresh spawned "
        "process; peak RSS from getrusage (self, and children after the workers exit)."
    ]
    return Result(rows, notes=notes, data={"mb_s": tar_mb / p50(one)})

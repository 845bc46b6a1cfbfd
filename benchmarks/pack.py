"""Pack rate with 1 job and one per core, peak RSS, and the store's bytes against the tars'."""

from __future__ import annotations

import os
import resource
import shutil
from pathlib import Path

from harness import Ctx, Result, p50, question, ratio, row, side_by_side, synth_cached, x

from sa1b_pack.format.files import COUNTS_PAYLOAD, JPEG_PAYLOAD, PARTS_DIR

MB = 1e6


def long_shards(ctx: Ctx) -> list[Path]:
    """Shards long enough that a shard's fixed costs (tables, fsyncs, manifest commit) weigh
    about as little as in a real ~10 GB one: the run's own when real (or smoke), else synthetic
    shards of 96 full-size images (made once, cached in benchmarks/.cache)."""
    if ctx.full or ctx.smoke:
        return ctx.tars
    return synth_cached(range(len(ctx.tars)), 96, False, None)


@question("pack", "How fast does packing go, per core and with every core, in how much memory, "
          "into how many bytes?")  # fmt: skip
def pack_rate(ctx: Ctx) -> Result:
    from joblib.externals.loky import get_reusable_executor

    from sa1b_pack import open_store, pack

    jobs, rounds, tars = os.cpu_count() or 1, ctx.size(5, 1, 1), long_shards(ctx)
    dst, indices = ctx.work / "pack-out", [int(p.stem[3:]) for p in tars]

    def pack_once(jobs: int) -> None:
        if not pack(tars[0].parent, dst, indices, jobs=jobs, progress=False).ok:
            raise SystemExit(f"packing {dst} failed")

    times = side_by_side({"1 job": lambda: pack_once(1), f"{jobs} jobs": lambda: pack_once(jobs)},
                         rounds, before=lambda: shutil.rmtree(dst, ignore_errors=True))  # fmt: skip
    get_reusable_executor().shutdown(wait=True)  # workers exit: RUSAGE_CHILDREN sees them
    rss = [resource.getrusage(w).ru_maxrss / 1024 for w in (resource.RUSAGE_SELF,
                                                            resource.RUSAGE_CHILDREN)]  # fmt: skip
    tar_mb, images = sum(p.stat().st_size for p in tars) / MB, len(open_store(dst))
    one, many = ([tar_mb / t for t in times[k]] for k in ("1 job", f"{jobs} jobs"))
    files = [p for p in dst.rglob("*") if p.is_file()]
    total = sum(p.stat().st_size for p in files)
    kinds = {name: sum(p.stat().st_size for p in files if p.name == name)
             for name in (JPEG_PAYLOAD, COUNTS_PAYLOAD)}  # fmt: skip
    tables = sum(p.stat().st_size for p in files if PARTS_DIR in p.parts) - sum(kinds.values())
    split = ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in (*kinds.items(),
                      ("tables", tables)))  # fmt: skip
    rows = [
        row("pack, 1 job, MB/s of tar", one, "MB/s", "ref",
            f"{images * p50(one) / tar_mb:.0f} images/s; {images} images per pack"),
        row(f"pack, {jobs} jobs, MB/s of tar", many, "MB/s", f"{x(ratio(many, one))} 1 job",
            "one shard per loky worker"),
        row("peak RSS, packing process", [rss[0]], "MB", what="its packs: 1 job and the parent"),
        row(f"peak RSS, largest worker ({jobs} jobs)", [rss[1]], "MB",
            what="interpreter and imports included"),
        row("store bytes / tar bytes", [total / MB / tar_mb], "ratio", what=f"{split} of it"),
    ]  # fmt: skip
    notes = [f"{len(tars)} shards, {tar_mb:.0f} MB of tar per pack; {rounds} interleaved rounds "
             "after 1 untimed, timing the pack call (fsyncs and commit included); peak RSS from "
             "getrusage (self, and children after the workers exit)."]  # fmt: skip
    return Result(rows, notes)

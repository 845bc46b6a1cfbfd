"""How fast does packing go, per core and with every core, in how much memory, into how many bytes?

Packs the run's shards with 1 job and with one job per core, interleaved, in a fresh spawned
process, so that its peak RSS (``resource.getrusage``) is the packer's and not the benchmark's;
the workers' peak comes from ``RUSAGE_CHILDREN`` once they exit. The floor parts of a pack
(streaming the tar, parsing the JSON, hashing the bytes) are timed alone for the breakdown, and
the store's bytes are compared with the source's, file kind by file kind.
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import os
import resource
import shutil
import tarfile
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import orjson
from common import (
    add_input_args,
    args_dict,
    environment,
    input_description,
    measure_side_by_side,
    p50,
    peak_rss_mb,
    print_header,
    print_summary,
    source_tars,
    summary_row,
    work_dir,
    write_results,
)

from sa1b_pack import open_store, pack

MB = 1e6
COMPONENT_BYTES = 256 * MB  # the breakdown reads at most this much of the first shard


def linked_shards(tars: Sequence[Path], copies: int, folder: Path) -> list[Path]:
    """``copies`` x the shards under new indices (hard links), for a pack run long enough to
    time: a small shard packs in tens of ms, too close to joblib's dispatch cost."""
    if copies == 1:
        return list(tars)
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


def pack_child(
    tars: list[str], jobs_all: int, repeats: int, warmup: int, work: str
) -> dict[str, Any]:
    """In a fresh process: pack(jobs=1) vs pack(jobs=all) into new stores, interleaved."""
    from joblib.externals.loky import get_reusable_executor

    rss_start = peak_rss_mb()
    src, shards = Path(tars[0]).parent, [int(Path(p).stem[3:]) for p in tars]
    made: list[str] = []

    def run(jobs: int) -> Callable[[], None]:
        def go() -> None:
            dst = Path(work) / f"pack-j{jobs}-{len(made)}"
            made.append(str(dst))
            report = pack(src, dst, shards, jobs=jobs, progress=False)
            assert report.ok and not report.skipped_existing, report

        return go

    cases = {"1 job": run(1), f"{jobs_all} jobs": run(jobs_all)}
    times = measure_side_by_side(cases, repeats, warmup=warmup)
    get_reusable_executor().shutdown(wait=True)  # workers exit: RUSAGE_CHILDREN sees them
    return {
        "times": times,
        "rss_start_mb": rss_start,
        "rss_peak_mb": peak_rss_mb(),
        "worker_peak_mb": peak_rss_mb(resource.RUSAGE_CHILDREN),
        "made": made,
    }


def scan_source(tars: Sequence[Path]) -> dict[str, Any]:
    """Bytes of JPEG members, JSON members and COCO strings; the first shard's members (up to
    COMPONENT_BYTES) kept for the breakdown."""
    out: dict[str, Any] = {"jpeg": 0, "json": 0, "counts": 0, "members": [], "kept": 0}
    for k, path in enumerate(tars):
        with open(path, "rb") as raw, tarfile.open(fileobj=raw, mode="r|*") as tar:
            for info in tar:
                if not info.isfile():
                    continue
                reader = tar.extractfile(info)
                data = reader.read() if reader else b""
                if info.name.endswith(".json"):
                    out["json"] += len(data)
                    anns = orjson.loads(data)["annotations"]
                    out["counts"] += sum(len(a["segmentation"]["counts"]) for a in anns)
                elif info.name.endswith(".jpg"):
                    out["jpeg"] += len(data)
                if k == 0 and out["kept"] < COMPONENT_BYTES:
                    out["members"].append((info.name, data))
                    out["kept"] += len(data)
    return out


def component_times(tar: Path, members: list[tuple[str, bytes]], repeats: int) -> dict:
    """Seconds for the parts of a pack that no packer can skip, over the kept members."""
    jsons = [d for name, d in members if name.endswith(".json")]
    limit = sum(len(d) for _, d in members)

    def read() -> None:
        with open(tar, "rb") as raw, tarfile.open(fileobj=raw, mode="r|*") as t:
            done = 0
            for info in t:
                reader = t.extractfile(info) if info.isfile() else None
                done += len(reader.read()) if reader else 0
                if done >= limit:
                    break

    def sha() -> None:
        h = hashlib.sha256()
        for _, d in members:
            h.update(d)

    cases = {
        "tar stream read": read,
        "orjson.loads": lambda: [orjson.loads(d) for d in jsons],
        "sha256": sha,
    }
    return {"bytes": limit, "seconds": measure_side_by_side(cases, repeats, warmup=1)}


def size_rows(store_root: Path, src: dict[str, Any]) -> list[dict[str, Any]]:
    store = open_store(store_root)
    info = store.info()
    parts = [store.part(p) for p in range(len(store.shards))]
    jpeg_bin = sum(p.jpeg.nbytes for p in parts)
    counts_bin = sum(p.counts.nbytes for p in parts)
    tables = info["store_bytes"] - jpeg_bin - counts_bin
    ratio = info["store_bytes"] / info["source_bytes"]

    def row(name: str, value: float, note: str) -> dict[str, Any]:
        return summary_row(name, value, "ratio", n=1, dominated=note)

    return [
        row("store bytes / source tar bytes", ratio,
            f"{info['store_bytes'] / MB:.1f} MB / {info['source_bytes'] / MB:.1f} MB"),
        row("  jpeg.bin / JPEG members", jpeg_bin / max(src["jpeg"], 1), "kept as-is"),
        row("  counts.bin / COCO strings", counts_bin / max(src["counts"], 1),
            f"kept as-is ({counts_bin / MB:.1f} MB)"),
        row("  tables / JSON members", tables / max(src["json"], 1),
            f"Arrow IPC (mapped) + Parquet of every field ({tables / MB:.2f} MB vs "
            f"{src['json'] / MB:.2f} MB)"),
    ]  # fmt: skip


def rate_rows(res: dict, comp: dict, images: int, source_bytes: int) -> list[dict[str, Any]]:
    times = res["times"]
    one, full = times["1 job"], times[next(k for k in times if k != "1 job")]
    jobs_all = next(k for k in times if k != "1 job")
    per_mb = {k: p50(v) / (comp["bytes"] / MB) for k, v in comp["seconds"].items()}
    pack_per_mb = p50(one) / (source_bytes / MB)
    shares = ", ".join(f"{k} {100 * v / pack_per_mb:.0f}%" for k, v in per_mb.items())
    rest = 100 * (1 - sum(per_mb.values()) / pack_per_mb)
    out = []
    for name, t in (("1 job", one), (jobs_all, full)):
        rates = [images / s for s in t]
        mbs = source_bytes / MB / p50(t)
        ratio = "ref" if t is one else f"{p50(one) / p50(t):.2f}x 1 job"
        note = (
            f"{mbs:.0f} MB/s of tar; floors: {shares}; the rest ({rest:.0f}%): per-field "
            "validation in Python, Arrow/Parquet writes, fsync"
            if t is one
            else f"{mbs:.0f} MB/s of tar; one shard per loky worker ({os.cpu_count()} cores)"
        )
        out.append(
            summary_row(f"pack, {name}", p50(rates), "images/s", n=len(rates), ratio=ratio,
                        dominated=note)
        )  # fmt: skip
    out += [
        summary_row("peak RSS, packing process (1 job)", res["rss_peak_mb"], "MB", n=1,
                    dominated=f"{res['rss_start_mb']:.0f} MB after imports; the rest is one "
                    "shard's members, tables and hashes in flight"),
        summary_row(f"peak RSS, largest worker ({jobs_all})", res["worker_peak_mb"], "MB", n=1,
                    dominated="per worker process, interpreter and imports included"),
    ]  # fmt: skip
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_input_args(p)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds (start loky workers)")
    p.add_argument("--copies", type=int, default=2, help="pack each shard this many times")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="the all-cores run")
    p.add_argument("--keep", type=Path, help="leave a store of the shards here (for run_all)")
    args = p.parse_args(argv)
    if args.smoke:
        args.repeats, args.copies = 1, 1
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    env = environment()
    tars = source_tars(args)
    print_header(f"pack_rate: {input_description(args, tars)}", env)
    with work_dir(args.keep) as tmp:
        work = Path(tmp)
        linked = linked_shards(tars, args.copies, work / "linked")
        print(f"packing {len(linked)} shards, {args.repeats} rounds ...", flush=True)
        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(1, mp_context=spawn) as pool:
            res = pool.submit(
                pack_child, [str(p) for p in linked], args.jobs, args.repeats, args.warmup, tmp
            ).result()
        made = [Path(p) for p in res.pop("made")]
        store = args.keep or work / "kept"
        if args.copies == 1 and not store.exists():
            shutil.move(made[-1], store)  # the last all-cores store: exactly the source shards
        elif not store.exists():
            pack(tars[0].parent, store, [int(p.stem[3:]) for p in tars], progress=False)
        for path in made:
            shutil.rmtree(path, ignore_errors=True)
        print("source scan and breakdown ...", flush=True)
        src = scan_source(tars)
        comp = component_times(tars[0], src.pop("members"), args.repeats)
        images = len(open_store(store)) * args.copies
        source_bytes = sum(p.stat().st_size for p in linked)
        summary = rate_rows(res, comp, images, source_bytes) + size_rows(store, src)
    print()
    table = print_summary(summary)
    notes = [
        f"{len(linked)} shards ({args.copies} hard-linked copies of each of {len(tars)}), "
        f"{images} images, {source_bytes / MB:.0f} MB of tar per pack; median of "
        f"{args.repeats} interleaved rounds after {args.warmup} untimed; fresh spawned process. "
        f"Breakdown: each floor timed alone on {comp['bytes'] / MB:.0f} MB of the first shard, "
        "as a share of the 1-job time per MB."
    ]
    print("\n" + notes[0])
    print(f"allocator: {env['allocator']}")
    result = {
        "environment": env,
        "args": args_dict(args),
        "summary": summary,
        "notes": notes,
        "mb_s": {k: source_bytes / MB / p50(v) for k, v in res["times"].items()},
        "raw": {"pack": res, "components": comp, "source": src},
        "table": table,
    }
    path = write_results("pack_rate-smoke" if args.smoke else "pack_rate", result, args.results)
    print(f"results: {path}")
    return result


if __name__ == "__main__":
    main()

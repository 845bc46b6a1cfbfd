"""`make bench`: every question in one run on the same shards and store; one table and its JSON.

    python benchmarks/run.py [--only limits,peers] [--smoke]
    python benchmarks/run.py --full --src /data/sa1b --shards 0-3 [--store DST]

Synthetic full-size shards by default (made once, cached in benchmarks/.cache). Each question
runs in its own process (``--one KEY``), so one's threads, forks and freed memory cannot slow
the next. Writes results/<date>-<host>.json; report.py renders docs/benchmarks.md from it.
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import harness as h
from readings import limits_rows, reading

from sa1b_pack import parse_shards

KEYS = ("limits", "pack", "masks", "loader", "peers", "scale", "cluster", "startup", "prompts",
        "gpu")  # each question's key, and the module that answers it  # fmt: skip


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--src", type=Path, help="folder of real sa_NNNNNN.tar (default: synthetic)")
    p.add_argument("--shards", default="0-1", help="shard indices, e.g. 0-3 or 3,7")
    p.add_argument("--images", type=int, default=24, help="images per synthetic shard")
    p.add_argument("--store", type=Path, help="a store of those shards (packed if absent)")
    p.add_argument("--full", action="store_true", help="sizes for real ~10 GB shards (--src)")
    p.add_argument("--smoke", action="store_true", help="tiny images and repeats, for tests")
    p.add_argument("--only", default="", help="comma-separated: " + ",".join(KEYS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", type=Path, help="synthetic shards cache folder")
    p.add_argument("--results", type=Path, default=h.RESULTS_DIR)
    p.add_argument("--one", help=argparse.SUPPRESS)  # child: run this question only
    p.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if unknown := set(args.only.split(",")) - {"", *KEYS}:
        p.error(f"--only: no question {', '.join(sorted(unknown))} (there are {', '.join(KEYS)})")
    if args.full and args.src is None:
        p.error("--full needs --src (a folder of real sa_NNNNNN.tar shards)")
    return args


def source_tars(args: argparse.Namespace) -> list[Path]:
    indices = parse_shards(args.shards)
    if args.src is not None:
        return [args.src / f"sa_{i:06d}.tar" for i in indices]
    return h.synth_cached(indices, 3 if args.smoke else args.images, args.smoke, args.cache)


def describe(args: argparse.Namespace, tars: list[Path]) -> str:
    if args.src is not None:
        return f"{len(tars)} shards from {args.src}"
    kind = "small synthetic images (smoke)" if args.smoke else "full-size synthetic SA-1B"
    return f"{len(tars)} shards x {3 if args.smoke else args.images} images, {kind}"


def child(args: argparse.Namespace) -> int:
    """Run one question in this process and write its part of the run."""
    importlib.import_module(args.one)
    text, fn, script = h.QUESTIONS[args.one]
    ctx = h.Ctx(source_tars(args), args.store, args.work, args.smoke, args.full, args.seed)
    t0 = time.perf_counter()
    res = fn(ctx)
    part = {"question": text, "script": f"benchmarks/{script}", "rows": res.rows,
            "notes": res.notes, "skipped": res.skipped,
            "seconds": time.perf_counter() - t0, "environment": h.environment()}  # fmt: skip
    h.write_json(args.out, part)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.one:
        return child(args)
    t_start, env = time.perf_counter(), h.environment()
    tars = source_tars(args)  # synthetic shards are made here, before any timing
    keys = [k for k in KEYS if not args.only or k in args.only.split(",")]
    print(f"$ {env['command']}\n# {describe(args, tars)}; {env['cpus_usable']} CPUs "
          f"({env['cpu_model']}), load {env['loadavg'][0]:.1f}; allocator: {env['allocator']}",
          flush=True)  # fmt: skip
    near = args.store.resolve().parent if args.store else (args.src if args.full else None)
    parts: dict[str, dict[str, Any]] = {}
    failed: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="sa1b-bench-", dir=near) as tmp:
        work = Path(tmp)
        store = args.store or work / "store"
        if not store.exists():
            print(f"packing {store} (untimed) ...", flush=True)
            h.pack_store(tars, store)
        for key in keys:
            out, log = work / f"{key}.json", work / f"{key}.log"
            print(f"{key} ...", end=" ", flush=True)
            cmd = [sys.executable, __file__, *(sys.argv[1:] if argv is None else argv), "--one",
                   key, "--store", str(store), "--work", str(work), "--out", str(out)]  # fmt: skip
            with open(log, "w") as f:
                code = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT).returncode
            if code != 0 or not out.exists():
                failed[key] = log.read_text()[-20000:]
                print(f"FAILED (exit {code}):\n" + "\n".join(failed[key].splitlines()[-15:]))
                continue
            parts[key] = json.loads(out.read_text())
            print(f"{parts[key]['seconds']:.0f} s", flush=True)
            for reason in parts[key]["skipped"]:
                print(f"{key}: not measured: {reason}", flush=True)
    for key, part in parts.items():  # from the rows alone, as report.py renders them
        part["reading"] = reading(key, part["rows"])
    if more := limits_rows(parts):
        parts["run"] = {"question": "Against this machine's limits (same run)", "rows": more}
    rows = [dict(r, question=k) for k, p in parts.items() for r in p["rows"]]
    wall = time.perf_counter() - t_start
    table = h.text_table(rows, ("question", *h.HEADERS))
    print(f"\n{table}\n")
    for key, part in parts.items():
        for line in part.get("reading", []):
            print(f"{key}: {line}")
    print(f"\nwall time {wall / 60:.1f} min; n = repeats behind each median; notes in the JSON")
    run = {"environment": env, "args": {k: str(v) for k, v in vars(args).items()},
           "input": describe(args, tars), "wall_s": wall, "failed": list(failed),
           "failed_logs": failed, "questions": parts, "table": table}  # fmt: skip
    path = h.write_json(args.results / f"{'smoke-' * args.smoke}{h.run_name()}.json", run)
    print(f"results: {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

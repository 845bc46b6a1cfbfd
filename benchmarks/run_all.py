"""`make bench`: the whole I/O benchmark suite in one run, every question on the same shards.

Takes the shards (synthetic ones it generates and caches, or real ones with --src), has
pack_rate.py pack them into the run's store, then runs each question script as its own
process on those shards and that store (a script's memory and worker processes cannot skew
the next one), collects their results, prints one table, and writes
``benchmarks/results/<date>-<host>.json`` and ``.png``. report.py turns the JSON into the
README's benchmark section. ``--full`` sizes the run for real ~10 GB shards.
"""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common import (
    BENCH_DIR,
    RESULTS_DIR,
    add_input_args,
    args_dict,
    environment,
    input_description,
    print_header,
    print_summary,
    source_tars,
    summary_row,
    work_dir,
    write_results,
)

# (key, script): in run order; pack_rate first, as it leaves the run's store behind.
SCRIPTS = (
    ("limits", "limits.py"),
    ("pack", "pack_rate.py"),
    ("access", "access.py"),
    ("store", "bench_store.py"),
    ("masks", "bench_masks.py"),
    ("loader", "bench_loader.py"),
    ("peers", "peers.py"),
    ("layout", "payload_layout.py"),
)
# Real shards hold ~11,000 images each: time what a sample costs, not whole shards.
FULL_ARGS = {
    "pack": ["--copies", "1", "--repeats", "1", "--warmup", "0"],
    "access": ["--samples", "200"],
    "loader": ["--samples", "96", "--no-resized"],
    "peers": ["--samples", "16"],
}


def question(script: str) -> str:
    """The first paragraph of a script's docstring: the question it answers."""
    doc = ast.get_docstring(ast.parse((BENCH_DIR / script).read_text())) or script
    return " ".join(doc.split("\n\n")[0].split())


def script_args(args: argparse.Namespace, key: str, store: Path, parts: Path) -> list[str]:
    out = ["--shards", str(args.shards), "--seed", str(args.seed), "--results", str(parts)]
    if args.src is not None:
        out += ["--src", str(args.src)]
    else:
        out += ["--images", str(args.images)]
    if args.cache is not None:
        out += ["--cache", str(args.cache)]
    if args.smoke:
        out.append("--smoke")
    if key == "limits":
        out += ["--dir", str(store.parent)]
    out += ["--keep", str(store)] if key == "pack" else ["--store", str(store)]
    return out + (FULL_ARGS.get(key, []) if args.full else [])


def run_script(key: str, script: str, argv: list[str], logs: Path) -> tuple[bool, float]:
    """Run one script, its output to ``logs/<key>.log``; (succeeded, seconds)."""
    log = logs / f"{key}.log"
    t0 = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.run(
            [sys.executable, str(BENCH_DIR / script), *argv], stdout=out, stderr=subprocess.STDOUT
        )
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        print(f"  {script} FAILED (exit {proc.returncode}); last lines of its log:")
        print("\n".join(log.read_text().splitlines()[-15:]))
    return proc.returncode == 0, seconds


def _ms(row: dict[str, Any]) -> float:
    return row["p50"] * {"ms": 1.0, "µs": 1e-3, "s": 1e3}[row["unit"]]


def derived(scripts: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Ratios across scripts of the same run: our numbers against this machine's limits."""

    def find(key: str, text: str) -> dict[str, Any] | None:
        rows = scripts.get(key, {}).get("summary", [])
        return next((r for r in rows if text in r["measure"]), None)

    out = []
    mbs = scripts.get("pack", {}).get("mb_s", {}).get("1 job")
    cold = find("limits", "sequential read, cold")
    if mbs and cold:
        out.append(summary_row(
            "pack, 1 job: source read rate / cold sequential read", mbs / (10 * cold["p50"]),
            "%", n=1, dominated=f"{mbs:.0f} MB/s against {cold['p50']:.2f} GB/s: packing is "
            "CPU-bound, the disk mostly idles"))  # fmt: skip
    recipe = find("access", "training recipe (training_sample), random, warm")
    jpeg = find("limits", "1/2 DCT")
    if recipe and jpeg:
        ratio = _ms(recipe) / _ms(jpeg)
        out.append(summary_row(
            "training recipe / bare JPEG decode (1/2 DCT)", ratio, "x", n=1,
            dominated=f"{_ms(recipe):.2f} ms per sample against {_ms(jpeg):.2f} ms for the "
            "decode alone: the rest is the resize, masks and fields"))  # fmt: skip
    return out


def check_store(store: Path | None, tars: Sequence[Path]) -> bool:
    """Whether ``store`` already holds exactly the run's shards (else it must not exist)."""
    if store is None or not store.exists():
        return False
    from sa1b_pack import open_store

    shards, wanted = open_store(store).shards, [p.stem for p in tars]
    if sorted(shards) != sorted(wanted):
        raise SystemExit(f"{store} holds shards {shards}, this run reads {wanted}: use another")
    return True


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_input_args(p)
    p.add_argument("--full", action="store_true", help="sizes for real ~10 GB shards (--src)")
    p.add_argument("--only", default="", help="comma-separated keys: " + ",".join(dict(SCRIPTS)))
    args = p.parse_args(argv)
    if args.full and args.src is None:
        p.error("--full needs --src (a folder of real sa_NNNNNN.tar shards)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    env = environment()
    t_start = time.perf_counter()
    tars = source_tars(args)  # generates synthetic shards once, before any timing
    print_header(f"run_all: {input_description(args, tars)}", env)
    only = [k for k in args.only.split(",") if k]
    have_store = check_store(args.store, tars)
    needed = {"pack"} if not have_store else set()  # pack_rate leaves the run's store
    chosen = [(k, s) for k, s in SCRIPTS if not only or k in only or k in needed]
    results_dir = args.results or RESULTS_DIR
    scripts: dict[str, dict[str, Any]] = {}
    failed: dict[str, str] = {}  # script -> the end of its log
    # Scratch beside the given store, or beside real shards (not /tmp: it may be small or RAM).
    with work_dir(args.store or (args.src if args.full else None)) as tmp:
        work = Path(tmp)
        store = args.store or work / "store"
        parts, logs = work / "results", work / "logs"
        parts.mkdir()
        logs.mkdir()
        for key, script in chosen:
            print(f"{script} ...", end=" ", flush=True)
            ok, seconds = run_script(key, script, script_args(args, key, store, parts), logs)
            found = sorted(parts.glob(f"{Path(script).stem}-*.json"))
            if not ok or not found:
                failed[script] = (logs / f"{key}.log").read_text()[-20000:]
                continue
            scripts[key] = json.loads(found[-1].read_text())
            scripts[key].update(
                script=f"benchmarks/{script}", question=question(script), seconds=seconds
            )
            print(f"{seconds:.0f} s", flush=True)
    rows = [dict(r, script=key) for key, res in scripts.items() for r in res["summary"]]
    rows += [dict(r, script="run") for r in derived(scripts)]
    wall = time.perf_counter() - t_start
    print()
    table = print_summary(rows, first=("script",))
    print(
        f"\nwall time {wall / 60:.1f} min; n = timed repeats behind each median; "
        f"allocator: {env['allocator']}; per-script tables and notes: in the JSON"
    )
    run = {
        "environment": env,
        "args": args_dict(args),
        "input": input_description(args, tars),
        "wall_s": wall,
        "failed": list(failed),
        "failed_logs": failed,
        "summary": rows,
        "scripts": scripts,
        "table": table,
    }
    path = write_results("smoke" if args.smoke else "", run, results_dir)
    print(f"results: {path}")
    try:
        from report import write_chart

        print(f"chart: {write_chart(run, path.with_suffix('.png'))}")
    except ImportError as exc:  # matplotlib is in the bench extra
        print(f"chart skipped: {exc}")
    if failed:
        print(f"FAILED: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Render a run of run_all.py: the README's benchmark section and the samples/s chart.

    python benchmarks/report.py [RUN.json] [--readme README.md]

Replaces what lies between ``<!-- bench:start -->`` and ``<!-- bench:end -->`` in the README
with tables generated from the run's JSON (default: the newest ``results/<date>-<host>.json``),
so the section can never drift from the numbers. Nothing in it is typed by hand.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common import BENCH_DIR, RESULTS_DIR, SUMMARY_HEADERS, format_cell

START, END = "<!-- bench:start -->", "<!-- bench:end -->"
RUN_FILE = re.compile(r"^\d{4}-\d{2}-\d{2}-.+\.json$")  # <date>-<host>.json, not per-script
ROOT = BENCH_DIR.parent


def latest_run(folder: Path = RESULTS_DIR) -> Path:
    runs = sorted(p for p in folder.glob("*.json") if RUN_FILE.match(p.name))
    if not runs:
        raise SystemExit(f"no run in {folder}: run `make bench` first")
    return max(runs, key=lambda p: p.stat().st_mtime)


def chart_bars(run: dict[str, Any]) -> list[tuple[str, int, float]]:
    """(system, workers, samples/s): the peers on one recipe, plus our pre-resized store."""
    scripts = run["scripts"]
    label = {"WebDataset": "WebDataset (sequential)"}
    peers = [(label.get(b["system"], b["system"]), b["workers"], b["samples_s"])
             for b in scripts.get("peers", {}).get("chart", [])]  # fmt: skip
    resized = [
        ("sa1b_pack, pre-resized store*", 2 if "W=2" in row["measure"] else 0, row["p50"])
        for row in scripts.get("loader", {}).get("summary", [])
        if row["measure"].startswith("ours, pre-resized store")
    ]
    ours = [b for b in peers if b[0] == "sa1b_pack"]
    return ours + resized + [b for b in peers if b[0] != "sa1b_pack"]


def write_chart(run: dict[str, Any], path: Path) -> Path:
    """Bars of samples/s per system, 0 and 2 workers side by side, log scale (matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars = chart_bars(run)
    systems = list(dict.fromkeys(s for s, _, _ in bars))
    fig, ax = plt.subplots(figsize=(9, 4.2), dpi=110)
    width = 0.38
    for k, workers in enumerate((0, 2)):
        xs, ys = [], []
        for x, system in enumerate(systems):
            value = next((v for s, w, v in bars if s == system and w == workers), math.nan)
            xs.append(x + (k - 0.5) * width)
            ys.append(value)
        drawn = ax.bar(xs, ys, width, label=f"{workers} workers")
        ax.bar_label(drawn, labels=[format_cell(v) for v in ys], fontsize=7, padding=2)
    ax.set_yscale("log")
    values = [v for _, _, v in bars if v == v]
    ax.set_ylim(min(values) / 2, max(values) * 2)
    ax.set_xticks(range(len(systems)), systems, rotation=15, ha="right", fontsize=8)
    ax.set_ylabel("samples/s (log scale)")
    env = run["environment"]
    recipe = run["scripts"].get("peers", {}).get("args", {})
    ax.set_title(
        f"SAM recipe (image {recipe.get('image_size', 1024)}, 64 masks at "
        f"{recipe.get('mask_size', 256)}), DataLoader samples/s\n"
        f"{run['input']}; {env['date'][:10]}, {env['cpus_usable']} CPUs ({env['cpu_model']})",
        fontsize=9,
    )
    ax.legend(fontsize=8)
    fig.text(0.01, 0.01, "* bench_loader.py's epoch; the rest: peers.py's", fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """The summary rows as a markdown table (empty p95/p99 columns are dropped)."""
    headers = [
        h for h in SUMMARY_HEADERS if any(format_cell(r.get(h, "")) not in ("-", "") for r in rows)
    ]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for r in rows:
        cells = [format_cell(r.get(h, "")).replace("|", "\\|") for h in headers]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def section(run: dict[str, Any], run_path: Path, chart: Path | None, base: Path) -> str:
    """The README section; links are relative to ``base`` (the README's folder)."""
    env = run["environment"]
    allocator = env["allocator"]
    if allocator == "glibc defaults":
        allocator += " (no `MALLOC_*` set)"
    raw = os.path.relpath(run_path, base)
    lines = [
        "## Benchmarks",
        "",
        "`make bench` runs every question below in one run on the same shards, each script "
        "measuring ours and the alternatives side by side, prints one table and writes "
        "`benchmarks/results/<date>-<host>.json` and `.png`; `benchmarks/report.py` generates "
        "this section from that JSON (`make bench FULL=1 SRC=/data/sa1b SHARDS=0-3` does the "
        "same on real shards). Medians over n timed repeats, p95/p99 where each call is "
        "timed; every ratio comes from the same run.",
        "",
        f"This run: {run['input']}; {env['date'][:10]}, host `{env['host']}`, "
        f"{env['cpus_usable']} of {env['cpu_count']} CPUs ({env['cpu_model']}); python "
        f"{env['python']}, numpy {env['numpy']}, numba {env['numba']}, torch {env['torch']}, "
        f"pycocotools {env['pycocotools']}, webdataset {env['webdataset']}, litdata "
        f"{env['litdata']}; allocator: {allocator}; wall time {run['wall_s'] / 60:.1f} min. "
        f"Raw numbers: [`{raw}`]({raw}).",
    ]
    if run.get("failed"):
        lines += ["", f"**Failed in this run:** {', '.join(run['failed'])}."]
    if chart is not None and chart.exists():
        lines += [
            "",
            f"![DataLoader samples/s per system, log scale]({os.path.relpath(chart, base)})",
        ]
    by_script: dict[str, list[dict[str, Any]]] = {}
    for row in run["summary"]:
        by_script.setdefault(row["script"], []).append(row)
    for key, res in run["scripts"].items():
        lines += ["", f"### {res['question']} (`{res['script']}`, {res['seconds']:.0f} s)", ""]
        lines.append(markdown_table(by_script.get(key, [])))
        for note in res.get("notes", []):
            lines += ["", note]
    if "run" in by_script:
        lines += ["", "### Against this machine's limits (same run)", ""]
        lines.append(markdown_table(by_script["run"]))
    return "\n".join(lines)


def update_readme(readme: Path, text: str) -> None:
    """Replace the marked section, atomically; the markers must be there, once each."""
    old = readme.read_text()
    if old.count(START) != 1 or old.count(END) != 1 or old.index(START) > old.index(END):
        raise SystemExit(f"{readme}: needs exactly one {START} ... {END} pair")
    head, rest = old.split(START)
    _, tail = rest.split(END)
    tmp = readme.with_suffix(".tmp")
    tmp.write_text(f"{head}{START}\n{text}\n{END}{tail}")
    os.replace(tmp, readme)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run", type=Path, nargs="?", help="a run's JSON (default: the newest)")
    p.add_argument("--readme", type=Path, default=ROOT / "README.md")
    args = p.parse_args(argv)
    path = (args.run or latest_run()).resolve()
    run = json.loads(path.read_text())
    chart = path.with_suffix(".png")
    update_readme(args.readme, section(run, path, chart, args.readme.resolve().parent))
    print(f"{args.readme}: benchmark section regenerated from {path.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Render a run of run.py: the README's benchmark section and the samples/s chart.

    python benchmarks/report.py [RUN.json] [--readme README.md]

Replaces what lies between ``<!-- bench:start -->`` and ``<!-- bench:end -->`` with tables
generated from the run's JSON (default: the newest results/<date>-<host>.json), so the section
never drifts from the numbers. Nothing in it is typed by hand.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from pathlib import Path
from typing import Any

from harness import BENCH_DIR, HEADERS, RESULTS_DIR, format_cell

START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def write_chart(run: dict[str, Any], path: Path) -> Path | None:
    """samples/s per system on the training recipe, 0 and 2 workers side by side, log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    qs = run["questions"]
    bars = [c for k in ("loader", "peers") for c in qs.get(k, {}).get("data", {}).get("chart", [])]
    systems = list(dict.fromkeys(c["system"] for c in bars))
    if not systems:
        return None
    fig, ax = plt.subplots(figsize=(9, 4.2), dpi=110)
    for k, workers in enumerate((0, 2)):
        ys = [next((c["samples_s"] for c in bars if c["system"] == s and c["workers"] == workers),
                   math.nan) for s in systems]  # fmt: skip
        drawn = ax.bar([i + (k - 0.5) * 0.38 for i in range(len(systems))], ys, 0.38,
                       label=f"{workers} workers")  # fmt: skip
        ax.bar_label(drawn, labels=[format_cell(v) for v in ys], fontsize=7, padding=2)
    ax.set_yscale("log")
    ax.set_ylim(top=max(c["samples_s"] for c in bars) * 3)
    ax.set_xticks(range(len(systems)), systems, rotation=15, ha="right", fontsize=8)
    ax.set_ylabel("samples/s (log scale)")
    env = run["environment"]
    ax.set_title(f"SAM training recipe through a DataLoader, samples/s\n{run['input']}; "
                 f"{env['date'][:10]}, {env['cpus_usable']} CPUs ({env['cpu_model']})",
                 fontsize=9)  # fmt: skip
    ax.legend(fontsize=8)
    fig.text(0.01, 0.01, "sa1b_pack: the loader question's epochs (batch 8); peers: the peers "
             "question's (see its batch)", fontsize=7)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def markdown(rows: list[dict[str, Any]]) -> str:
    """Rows as a markdown table; columns empty in every row are dropped."""
    cols = [h for h in HEADERS if any(format_cell(r.get(h, "")) not in ("", "-") for r in rows)]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(format_cell(r.get(c, "")).replace("|", "\\|") for c in cols)
              + " |" for r in rows]  # fmt: skip
    return "\n".join(lines)


def section(run: dict[str, Any], path: Path, base: Path) -> str:
    env, raw = run["environment"], os.path.relpath(path, base)
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    lines = [
        "## Benchmarks", "",
        "`make bench` answers every question below in one run on the same shards and prints one "
        "table; `benchmarks/report.py` writes this section from the run's JSON (`make bench "
        "FULL=1 SRC=/data/sa1b SHARDS=0-3`: the same on real shards). p50 = median over n "
        "repeats; ratios come from interleaved rounds of the same run; reading lines are "
        "computed from the numbers. One-off design experiments: `docs/decisions/`.", "",
        f"This run: {run['input']}; {env['date'][:10]}, host `{env['host']}`, "
        f"{env['cpus_usable']} of {env['cpu_count']} CPUs ({env['cpu_model']}); python "
        f"{env['python']}, {versions}; allocator/threads env: {env['allocator']}; load average "
        f"{env['loadavg'][0]:.1f} at the start; wall time "
        f"{run['wall_s'] / 60:.1f} min; `{env['command']}`. Raw numbers: [`{raw}`]({raw}).",
    ]  # fmt: skip
    if run["failed"]:
        lines += ["", f"**Failed in this run:** {', '.join(run['failed'])}."]
    chart = path.with_suffix(".png")
    if chart.exists():
        lines += ["", f"![DataLoader samples/s per system]({os.path.relpath(chart, base)})"]
    for part in run["questions"].values():
        where = f" (`{part['script']}`, {part['seconds']:.0f} s)" if "script" in part else ""
        lines += ["", f"### {part['question']}{where}", "", markdown(part["rows"])]
        lines += [f"\n**Reading:** {t}" for t in part.get("reading", [])]
        lines += [f"\n{t}" for t in part.get("notes", [])]
    return "\n".join(lines)


def update_readme(readme: Path, text: str) -> None:
    """Replace the marked section, atomically; the markers must be there, once each."""
    old = readme.read_text()
    if old.count(START) != 1 or old.count(END) != 1 or old.index(START) > old.index(END):
        raise SystemExit(f"{readme}: needs exactly one {START} ... {END} pair")
    head, rest = old.split(START)
    tmp = readme.with_suffix(".tmp")
    tmp.write_text(f"{head}{START}\n{text}\n{END}{rest.split(END)[1]}")
    os.replace(tmp, readme)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run", type=Path, nargs="?", help="a run's JSON (default: the newest)")
    p.add_argument("--readme", type=Path, default=BENCH_DIR.parent / "README.md")
    args = p.parse_args(argv)
    runs = [f for f in RESULTS_DIR.glob("*.json") if re.match(r"\d{4}-\d\d-\d\d-.+\.json", f.name)]
    if args.run is None and not runs:
        raise SystemExit(f"no run in {RESULTS_DIR}: run `make bench` first")
    path = (args.run or max(runs, key=lambda f: f.stat().st_mtime)).resolve()
    import json

    run = json.loads(path.read_text())
    write_chart(run, path.with_suffix(".png"))
    update_readme(args.readme, section(run, path, args.readme.resolve().parent))
    print(f"{args.readme}: benchmark section regenerated from {path.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

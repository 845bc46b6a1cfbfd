"""The benchmarks must keep running against the current API (STYLE.md, principle 11).

`make bench` is smoke-run once as the Makefile runs it (run.py on tiny synthetic shards, every
question in its own process), then report.py on its JSON; `make demo`'s read-back runs as
`make demo` runs it. Only completion and the shape of the reports are checked, never a timing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sa1b_pack import pack
from sa1b_pack.testing import synth

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
QUESTIONS = ["limits", "pack", "access", "masks", "loader", "memory", "peers", "scale", "prompts"]


def run_script(script: str, *args: str | os.PathLike) -> str:
    """Run a benchmark script as the Makefile does; its stdout, or fail with its output."""
    proc = subprocess.run([sys.executable, str(BENCH / script), *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`make bench`, smoke-sized: run.py's stdout, its JSON and its path."""
    results = tmp_path_factory.mktemp("bench-results")
    cache = tmp_path_factory.mktemp("bench-cache")
    out = run_script("run.py", "--smoke", "--cache", cache, "--results", results)
    (path,) = results.glob("smoke-*.json")
    return {"stdout": out, "run": json.loads(path.read_text()), "path": path}


def test_make_bench_answers_every_question_in_one_table(bench_run: dict[str, Any]) -> None:
    out, run = bench_run["stdout"], bench_run["run"]
    assert out.startswith("$ ") and "allocator: " in out
    assert out.count("question  measure") == 1  # one table
    assert run["failed"] == [] and list(run["questions"]) == [*QUESTIONS, "run"]
    env = run["environment"]
    assert env["cpu_model"] and "numpy" in env["versions"] and isinstance(env["env"], dict)
    for key in QUESTIONS:
        part = run["questions"][key]
        assert "?" in part["question"] and part["script"].startswith("benchmarks/")
        assert part["rows"] and part["notes"] and part["seconds"] > 0
        for row in part["rows"]:
            assert row["n"] >= 1 and row["p50"] == row["p50"] and row["unit"], row
    assert bench_run["path"].with_suffix(".png").stat().st_size > 0
    assert len(run["questions"]["run"]["rows"]) == 3  # against the limits and the seed loader


def test_each_question_reports_what_make_bench_promises(bench_run: dict[str, Any]) -> None:
    rows = {k: {r["measure"] for r in p["rows"]} for k, p in bench_run["run"]["questions"].items()}
    assert {"memset fill(0)", "memset fill(1)", "sequential read, cold"} <= rows["limits"]
    assert "JPEG decode, 1/2 DCT" in rows["limits"]
    assert {"peak RSS, packing process", "store bytes / tar bytes"} <= rows["pack"]
    # 1 job, all cores, and 1 job of the code before issue 14 (extracted from git history)
    in_git = (Path(__file__).parents[1] / ".git").exists()
    assert sum(m.startswith("pack, ") for m in rows["pack"]) == (3 if in_git else 2)
    assert len(rows["access"]) == 5 * 2 * 2  # patterns x orders x caches
    assert "training recipe, random, cold" in rows["access"]
    assert sum(m.endswith(", ours") for m in rows["masks"]) == 3 and len(rows["masks"]) == 10
    loader = {"W=0", "W=2 fork", "W=2 spawn", "pre-resized, W=0", "pre-resized, W=2 fork"}
    assert {f"SA1BDataset, {k}" for k in loader} <= rows["loader"]
    threads = {"threads=1", "threads=2", "pre-resized, threads=1", "pre-resized, threads=2"}
    assert {f"SA1BLoader, {k}" for k in threads} <= rows["loader"]
    memory = ("DataLoader W=2 fork", "DataLoader W=2 fork persistent",
              "DataLoader W=2 spawn persistent", "SA1BLoader threads=2")  # fmt: skip
    for case in memory:  # smoke: 3 epochs
        for what in ("RSS after epoch 1", "RSS after epoch 3", "RSS growth epoch 1 -> 3"):
            assert f"{case}: main process, {what}" in rows["memory"]
            assert ("SA1BLoader" in case) != (f"{case}: each worker, {what}" in rows["memory"])
    peers = {"seed-style files", "naive tar", "WebDataset"}
    assert {f"{p}, {w} workers" for p in peers for w in (0, 2)} <= rows["peers"]
    scale = rows["scale"]
    for order in ("uniform", "blocks"):
        assert {
            f"read every sample, {order} order",
            f"DataLoader 2 workers, {order} order",
        } <= scale
    assert {"first touch of a real-size part", "index of eligible images, per 1 M masks"} <= scale
    cases = ("local", "S3, no cache", "S3, cache cold", "S3, cache warm")
    assert {f"training recipe, {case}" for case in cases} <= scale
    for key in ("access", "masks", "loader", "memory", "peers", "scale"):
        assert bench_run["run"]["questions"][key]["reading"]  # computed conclusions


def test_report_regenerates_only_the_marked_section(
    bench_run: dict[str, Any], tmp_path: Path
) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\nbefore\n<!-- bench:start -->\nold\n<!-- bench:end -->\nafter\n")
    run_script("report.py", bench_run["path"], "--readme", readme)
    text = readme.read_text()
    assert text.startswith("# x\n\nbefore\n<!-- bench:start -->\n## Benchmarks")
    assert text.endswith("<!-- bench:end -->\nafter\n") and "\nold\n" not in text
    assert "![DataLoader samples/s" in text
    assert text.count("| measure | p50 |") == len(QUESTIONS) + 1  # and the "run" rows
    run_script("report.py", bench_run["path"], "--readme", readme)
    assert readme.read_text() == text  # generated: the same JSON gives the same section
    readme.write_text("no markers\n")
    proc = subprocess.run([sys.executable, str(BENCH / "report.py"), str(bench_run["path"]),
                           "--readme", str(readme)], capture_output=True)  # fmt: skip
    assert proc.returncode != 0


def test_demo_readback(tmp_path: Path) -> None:
    src, store = tmp_path / "src", tmp_path / "store"
    synth.synth_shards(src, [0, 1], 3, small=True, progress=False)
    assert pack(src, store, [0, 1], progress=False).ok
    out = run_script("demo_readback.py", store, src, "--samples", "2", "--rounds", "1",
                     "--results", tmp_path)  # fmt: skip
    assert "len(store) = 6" in out and out.count(": bit-exact") == 3 and "round trip OK" in out
    assert "masks() ours" in out and "allocator: " in out
    assert json.loads(next(tmp_path.glob("demo_readback-*.json")).read_text())["rows"]


def test_demo_readback_reports_a_difference(tmp_path: Path, monkeypatch) -> None:
    """The round-trip check must be able to fail: a changed byte or field is caught."""
    monkeypatch.syspath_prepend(str(BENCH))
    from demo_readback import differences, open_store, read_source

    src, store = tmp_path / "src", tmp_path / "store"
    synth.synth_shards(src, [0], 2, small=True, progress=False)
    assert pack(src, store, [0], progress=False).ok
    source = read_source([src / "sa_000000.tar"])
    sample = next(s for s in open_store(store) if len(s) > 0)
    good = source[sample.image_id]
    assert differences(sample, good) == []
    assert differences(sample, {**good, "jpg": good["jpg"][:-1] + b"\0"}) == ["JPEG bytes differ"]
    record = json.loads(good["json"])
    record["annotations"][0]["predicted_iou"] += 1e-12
    bad = {**good, "json": json.dumps(record).encode()}
    assert differences(sample, bad) == ["field predicted_iou differs"]


def test_harness_helpers(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(BENCH))
    import harness as h

    t = h.side_by_side({"a": lambda: None, "b": lambda: None}, rounds=3)
    assert {k: len(v) for k, v in t.items()} == {"a": 3, "b": 3}
    assert h.ratio([2.0, 4.0, 9.0], [1.0, 2.0, 3.0]) == 2.0 and h.x(25.0) == "25x"
    r = h.latency("op", [1e-4] * 12)
    assert (r["unit"], r["n"]) == ("µs", 12) and r["p95"] == pytest.approx(100.0)
    assert h.parse_shards("0-2,5") == [0, 1, 2, 5]
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    assert "MALLOC_ARENA_MAX=2" in h.environment()["allocator"]
    assert h.environment()["env"]["OPENBLAS_NUM_THREADS"] == "1"
    path = tmp_path / "data.bin"
    data = np.arange(1 << 20, dtype=np.uint8)
    data.tofile(path)
    mapped = np.memmap(path, dtype=np.uint8, mode="r")
    assert int(mapped.sum(dtype=np.int64)) == int(data.sum(dtype=np.int64))
    h.evict([path])  # drops pages, never data
    assert np.array_equal(mapped, data)

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
QUESTIONS = ["limits", "pack", "masks", "loader", "peers", "scale", "cluster", "startup",
             "prompts", "gpu"]  # fmt: skip


def run_script(script: str, *args: str | os.PathLike) -> str:
    """Run a benchmark script as the Makefile does; its stdout, or fail with its output."""
    proc = subprocess.run([sys.executable, str(BENCH / script), *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`make bench`, smoke-sized: run.py's stdout, its JSON and its path."""
    for module in ("torch", "webdataset", "moto"):  # what its questions import
        pytest.importorskip(module, reason="make bench needs the torch and bench extras")
    results = tmp_path_factory.mktemp("bench-results")
    cache = tmp_path_factory.mktemp("bench-cache")
    out = run_script("run.py", "--smoke", "--cache", cache, "--results", results)
    (path,) = results.glob("smoke-*.json")
    return {"stdout": out, "run": json.loads(path.read_text()), "path": path}


@pytest.mark.slow
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
    assert len(run["questions"]["run"]["rows"]) == 2  # against this machine's limits


@pytest.mark.slow
def test_each_question_reports_what_make_bench_promises(bench_run: dict[str, Any]) -> None:
    rows = {k: {r["measure"] for r in p["rows"]} for k, p in bench_run["run"]["questions"].items()}
    assert {"memset fill(1)", "sequential read, cold"} <= rows["limits"]
    assert "JPEG decode, 1/2 DCT" in rows["limits"]
    assert {"peak RSS, packing process", "store bytes / tar bytes"} <= rows["pack"]
    assert sum(m.startswith("pack, ") for m in rows["pack"]) == 2  # 1 job, every core
    assert sum(m.endswith(", ours") for m in rows["masks"]) == 3 and len(rows["masks"]) == 12
    assert {"full size, ours, output written", "memset fill(1), same bytes"} <= rows["masks"]
    exact = next(r for r in bench_run["run"]["questions"]["masks"]["rows"]
                 if r["measure"] == "masks bit-exact with pycocotools")  # fmt: skip
    assert exact["p50"] > 0  # every mask of the samples timed was compared, none differed
    loader = {"W=0", "W=2 fork", "W=2 spawn", "pre-resized, W=0", "pre-resized, W=2 fork"}
    assert {f"SA1BDataset, {k}" for k in loader} <= rows["loader"]
    threads = {"threads=1", "threads=2", "pre-resized, threads=1", "pre-resized, threads=2"}
    assert {f"SA1BLoader, {k}" for k in threads} <= rows["loader"]
    peers = {"sa1b_pack", "seed-style files", "naive tar", "WebDataset"}  # ratios: vs its rows
    assert {f"{p}, {w} workers" for p in peers for w in (0, 2)} <= rows["peers"]
    cases = ("local", "S3, no cache", "S3, cache cold", "S3, cache warm")
    assert {f"training recipe, {case}" for case in cases} <= rows["scale"]
    assert {"S3, no cache: requests per sample", "pack the run's shards to S3 (no delay)"} <= \
        rows["scale"]  # fmt: skip
    nodes = {f"2 nodes, a cache each, {o} order: cluster download" for o in ("blocks", "nodes")}
    assert nodes <= rows["scale"]
    wanted = {f"cluster download per epoch, {n} x 8 ranks, {o}" for n in (1, 2, 4, 16, 64)
              for o in ("blocks", "nodes")}  # fmt: skip
    assert wanted <= rows["cluster"]
    assert {"SA1BDataset start, persisted index", "projected start at SA-1B, persisted index"} <= \
        rows["startup"]  # fmt: skip
    assert {"SA1BLoader threads=2, stats on", "SA1BLoader threads=2, stats off"} <= rows["prompts"]
    gpu = {r["measure"]: r["p50"] for r in bench_run["run"]["questions"]["gpu"]["rows"]}
    assert gpu["masks that differ from the CPU loader's"] == 0  # smoke: the device path on the CPU
    assert gpu["other fields or padding that differ"] == 0
    assert {f"device=cpu, batch {b}" for b in (8, 32, 64)} <= gpu.keys()
    for key in QUESTIONS:  # every reading computed from the rows (limits, pack: tables only)
        if key not in ("limits", "pack"):
            assert bench_run["run"]["questions"][key]["reading"], key


@pytest.mark.slow
def test_report_writes_the_benchmarks_page(bench_run: dict[str, Any], tmp_path: Path) -> None:
    page = tmp_path / "docs" / "benchmarks.md"
    run_script("report.py", bench_run["path"], "--out", page)
    text = page.read_text()
    assert text.startswith("# Benchmarks\n") and "generated by benchmarks/report.py" in text
    for key in QUESTIONS:  # one anchor per question: the guides link to them
        assert f'<a id="{key}"></a>' in text
    assert text.count("| measure | p50 |") == len(QUESTIONS) + 1  # + the limits ratios
    run_script("report.py", bench_run["path"], "--out", page)
    assert page.read_text() == text


def test_report_computes_each_reading_from_the_rows_it_shows(
    bench_run: dict[str, Any], tmp_path: Path
) -> None:
    """A reading quotes the table's p50s: change a row in the JSON and the reading follows."""
    run = json.loads(bench_run["path"].read_text())
    rows = run["questions"]["cluster"]["rows"]
    (worst,) = [
        r for r in rows if r["measure"] == "cluster download per epoch, 64 x 8 ranks, nodes"
    ]
    worst.update(p50=1.23, values=[1.23])  # more than any other node-aware row, over the aim
    changed = tmp_path / "run.json"
    changed.write_text(json.dumps(run))
    page = tmp_path / "benchmarks.md"
    run_script("report.py", changed, "--out", page)
    reading = next(line for line in page.read_text().splitlines() if "Node-aware order" in line)
    assert "at most 1.23x the store per epoch (OVER the 1.05x aim)" in reading


def test_readings_of_known_rows(monkeypatch) -> None:
    """Reading lines and limit ratios are arithmetic on the rows' p50s: checked on rows whose
    answers are known (the worst case is the largest p50 shown, not a max behind it)."""
    monkeypatch.syspath_prepend(str(BENCH))
    from readings import limits_rows, reading

    def rows(*items: tuple[str, float, str]) -> list[dict[str, Any]]:
        return [{"measure": m, "p50": v, "unit": u} for m, v, u in items]

    peers = rows(("sa1b_pack, 0 workers", 40.0, "samples/s"),
                 ("sa1b_pack, 2 workers", 60.0, "samples/s"),
                 ("seed-style files, 0 workers", 1.0, "samples/s"),
                 ("seed-style files, 2 workers", 2.5, "samples/s"))  # fmt: skip
    assert reading("peers", peers)[0].startswith("sa1b_pack delivers 24x-40x the samples/s")
    cluster = rows(("cluster download per epoch, 2 x 8 ranks, blocks", 2.0, "x store"),
                   ("cluster download per epoch, 2 x 8 ranks, nodes", 1.0, "x store"),
                   ("cluster download per epoch, 4 x 8 ranks, blocks", 4.0, "x store"),
                   ("cluster download per epoch, 4 x 8 ranks, nodes", 1.04, "x store"),
                   ("padding of the node-aware order, most at 2-4 nodes", 0.5, "%"))  # fmt: skip
    assert reading("cluster", cluster) == [
        "Node-aware order: the cluster downloads at most 1.04x the store per epoch (within the "
        "1.05x aim), the blocks order up to 4.0x; padding at most 0.50% of the steps."
    ]
    startup = rows(("SA1BDataset start, first build (1,000 parts)", 800.0, "ms"),
                   ("SA1BDataset start, persisted index", 9000.0, "µs"),
                   ("projected start at SA-1B, persisted index", 1.5, "s"))  # fmt: skip
    (line,) = reading("startup", startup)
    assert "takes 1.1% of the first build (within the 10% aim)" in line
    assert "projected at SA-1B: 1.50 s (OVER 1 s)" in line
    gpu = rows(("masks that differ from the CPU loader's", 0.0, "masks"),
               ("other fields or padding that differ", 0.0, "fields"),
               ("image, mean absolute difference", 0.25, "levels"),
               ("device=cuda, batch 64", 1200.0, "samples/s"),
               ("CPU time per sample, device=cuda, batch 64", 0.8, "ms"),
               ("CPU, 16 threads, batch 64", 100.0, "samples/s"))  # fmt: skip
    exact, speed = reading("gpu", gpu)
    assert exact.startswith("Exact: 0 masks and 0 other fields differ")
    assert "1,200 samples/s (12.00x the threaded CPU loader) at 0.80 ms" in speed
    assert speed.endswith("under 1 ms: met).")  # no GPU memory sentence: its row is absent
    parts = {"pack": {"rows": rows(("pack, 1 job, MB/s of tar", 500.0, "MB/s"))},
             "limits": {"rows": rows(("sequential read, cold", 2.0, "GB/s"))}}  # fmt: skip
    (ratio,) = limits_rows(parts)
    assert ratio["p50"] == pytest.approx(0.25) and ratio["what"] == "500 MB/s against 2 GB/s"
    assert reading("limits", []) == [] and reading("peers", []) == []


def test_make_demo_steps(tmp_path: Path) -> None:
    """`make demo`'s read-back: verify against the tars, then the masks question on the store
    (which compares every mask it times with pycocotools)."""
    src, store, results = tmp_path / "src", tmp_path / "store", tmp_path / "results"
    synth.synth_shards(src, [0, 1], 3, small=True, progress=False)
    assert pack(src, store, [0, 1], progress=False).ok
    from sa1b_pack.cli import main

    assert main(["verify", str(store), "--source", str(src), "--quiet"]) == 0
    out = run_script("run.py", "--smoke", "--only", "masks", "--src", src, "--shards", "0-1",
                     "--store", store, "--results", results)  # fmt: skip
    assert "# 2 shards from " in out and "allocator: " in out
    assert "full size, ours masks(out=)" in out and "masks bit-exact with pycocotools" in out
    (run,) = [json.loads(f.read_text()) for f in results.glob("smoke-*.json")]
    assert run["failed"] == [] and list(run["questions"]) == ["masks"]


def test_masks_question_stops_at_a_mask_that_differs(tmp_path: Path, monkeypatch) -> None:
    """The masks question's check can fail: a decode that flips one pixel stops the run."""
    monkeypatch.syspath_prepend(str(BENCH))
    import harness as h
    from masks import masks

    from sa1b_pack.read.sample import Sample

    src, store = tmp_path / "src", tmp_path / "store"
    synth.synth_shards(src, [0], 3, small=True, progress=False)
    assert pack(src, store, [0], progress=False).ok
    decode = Sample.masks

    def flipped(self, *args, **kwargs):
        out = decode(self, *args, **kwargs)
        if not args and not kwargs:  # the untimed full-size check, not the timed cases
            out = out.copy()
            out.flat[0] ^= 1
        return out

    monkeypatch.setattr(Sample, "masks", flipped)
    with pytest.raises(SystemExit, match=r"masks differ from pycocotools"):
        masks(h.Ctx([], store, tmp_path, smoke=True))


def test_harness_helpers(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(BENCH))
    import harness as h

    t = h.side_by_side({"a": lambda: None, "b": lambda: None}, rounds=3)
    assert {k: len(v) for k, v in t.items()} == {"a": 3, "b": 3}
    assert h.ratio([2.0, 4.0, 9.0], [1.0, 2.0, 3.0]) == 2.0 and h.x(25.0) == "25x"
    r = h.latency("op", [1e-4] * 12)
    assert (r["unit"], r["n"]) == ("µs", 12) and r["p95"] == pytest.approx(100.0)
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    assert "MALLOC_ARENA_MAX=2" in h.environment()["allocator"]
    assert h.environment()["env"]["OPENBLAS_NUM_THREADS"] == "1"
    calls: list[str] = []
    t = h.side_by_side({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, rounds=2,
                       before=lambda: calls.append("-"))  # fmt: skip
    assert "".join(calls) == "-b-a-a-b-b-a"  # 1 untimed round first; order rotates each round
    assert {k: len(v) for k, v in t.items()} == {"a": 2, "b": 2}
    from limits import evict

    path = tmp_path / "data.bin"
    data = np.arange(1 << 20, dtype=np.uint8)
    data.tofile(path)
    evict(path)  # drops cached pages, never data
    assert np.array_equal(np.fromfile(path, np.uint8), data)

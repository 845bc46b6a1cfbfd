"""The benchmark scripts must keep running against the current API (STYLE.md, principle 11).

`make bench` is smoke-run once, as the Makefile runs it (run_all.py on tiny synthetic shards,
every script as its own process on the same shards and store), and each script's part of the
run is checked; one script also runs standalone (its own shards and store), and `make demo`'s
read-back runs as `make demo` runs it. Only completion and the shape of the reports are
checked, never a timing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sa1b_pack import pack
from sa1b_pack.testing import synth

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
MODULES = (
    "access", "baselines", "bench_loader", "bench_masks", "bench_store", "common",
    "demo_readback", "limits", "pack_rate", "payload_layout", "peer_datasets", "peers",
    "report", "run_all",
)  # fmt: skip


def run_script(script: str, *args: str | os.PathLike) -> str:
    """Run a benchmark script as the Makefile does; its stdout, or fail with its stderr."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), *map(str, args)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


@pytest.fixture
def scripts() -> Iterator[None]:
    """Import the scripts as their own folder does, then forget them (and their warnings
    filter), so that `common` and friends cannot shadow anything in later tests."""
    before = set(sys.modules)
    sys.path.insert(0, str(BENCH))
    try:
        with warnings.catch_warnings():
            yield
    finally:
        sys.path.remove(str(BENCH))
        for name in set(sys.modules) - before:
            if name in MODULES:
                del sys.modules[name]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bench-cache")


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory: pytest.TempPathFactory, cache: Path) -> dict[str, Any]:
    """`make bench`, smoke-sized: run_all.py's stdout, its JSON and the results folder."""
    results = tmp_path_factory.mktemp("bench-results")
    out = run_script("run_all.py", "--smoke", "--cache", cache, "--results", results)
    files = sorted(results.glob("smoke-*.json"))
    assert len(files) == 1, files
    return {"stdout": out, "run": json.loads(files[0].read_text()), "path": files[0]}


def part(bench_run: dict[str, Any], key: str) -> dict[str, Any]:
    """One script's result within the run, with its summary rows by measure."""
    res = bench_run["run"]["scripts"][key]
    assert res["environment"]["allocator"] and "?" in res["question"], res["question"]
    assert res["summary"] and res["notes"] and res["seconds"] > 0
    for row in res["summary"]:
        assert row["n"] >= 1 and row["p50"] == row["p50"], row  # counted, not NaN
    res["rows_by_measure"] = {r["measure"]: r for r in res["summary"]}
    return res


def test_run_all_prints_one_table_and_writes_the_run(bench_run: dict[str, Any]) -> None:
    out, run = bench_run["stdout"], bench_run["run"]
    assert out.startswith("$ ") and "allocator: " in out  # the exact command comes first
    table = out[out.index("script  measure") :]
    assert table.count("\nscript  measure") == 0  # one table, one header
    assert run["failed"] == [] and run["wall_s"] > 0
    assert list(run["scripts"]) == [
        "limits", "pack", "access", "store", "masks", "loader", "peers", "layout",
    ]  # fmt: skip
    assert {r["script"] for r in run["summary"]} == {*run["scripts"], "run"}
    assert bench_run["path"].with_suffix(".png").stat().st_size > 0
    assert not list(bench_run["path"].parent.glob("*.tmp"))


def test_limits_smoke(bench_run: dict[str, Any]) -> None:
    rows = part(bench_run, "limits")["rows_by_measure"]
    for name in ("memset fill(0)", "memset fill(1)", "memcpy", "sequential read, cold"):
        assert rows[name]["unit"] == "GB/s" and rows[name]["p50"] > 0
    assert any(m.startswith("JPEG decode") and m.endswith("PIL") for m in rows)


def test_pack_rate_smoke(bench_run: dict[str, Any]) -> None:
    res = part(bench_run, "pack")
    rows = res["rows_by_measure"]
    assert rows["pack, 1 job"]["unit"] == "images/s"
    assert rows["peak RSS, packing process (1 job)"]["p50"] > 10  # MB
    assert "store bytes / source tar bytes" in rows
    assert set(res["mb_s"]) == {"1 job", f"{os.cpu_count()} jobs"}


def test_access_smoke(bench_run: dict[str, Any]) -> None:
    rows = part(bench_run, "access")["rows_by_measure"]
    assert len(rows) == 5 * 2 * 2  # patterns x (sequential, random) x (warm, cold)
    for order in ("sequential", "random"):
        for cache in ("warm", "cold"):
            row = rows[f"training recipe (training_sample), {order}, {cache}"]
            assert row["p99"] >= row["p50"] > 0


def test_bench_store_smoke(bench_run: dict[str, Any]) -> None:
    res = part(bench_run, "store")
    assert {"store[i] + 4 metadata fields", "masks() ours, out= reused"} <= set(
        res["rows_by_measure"]
    )
    assert res["check"]["masks_equal"]


def test_bench_masks_smoke(bench_run: dict[str, Any]) -> None:
    res = part(bench_run, "masks")
    assert "full == pycocotools True, parallel == serial True" in res["notes"][0]
    assert res["bytes"]["runs"] > res["bytes"]["strings"] > 0
    assert res["checks"]["iou_equal_all"]


def test_bench_loader_smoke(bench_run: dict[str, Any]) -> None:
    res = part(bench_run, "loader")
    rows = {r["measure"] for r in res["rows"]}
    assert {"ours W=0", "ours W=2 fork", "ours W=2 spawn", "ours, pre-resized store W=0"} <= rows
    assert "JPEG floor: decode_image, out= reused" in rows
    assert set(res["first_epochs"]) >= {"ours W=2 spawn", "pre-resized W=2 fork"}


def test_peers_smoke(bench_run: dict[str, Any]) -> None:
    res = part(bench_run, "peers")
    # every peer runs here (webdataset is in the bench extra; LitData only if installed)
    peers = {"sa1b_pack", "seed-style files", "naive tar", "WebDataset"}
    assert peers <= {c["system"] for c in res["chart"]}
    assert {c["workers"] for c in res["chart"]} == {0, 2}
    assert all(res["check_same_masks"].values())  # every peer draws the masks ours does
    assert any("sequential only" in r["dominated by"] for r in res["summary"])
    assert any(m.startswith("naive tar: getmember") for m in res["rows_by_measure"])


def test_payload_layout_smoke(bench_run: dict[str, Any]) -> None:
    res = part(bench_run, "layout")
    # jpeg and counts, each as memmap + 2 codecs x 2 chunk sizes
    assert len(res["rows"]) == 10 and all(r["bytes"] > 0 for r in res["rows"])
    assert len(res["summary"]) == 4


def test_report_regenerates_only_the_marked_section(
    bench_run: dict[str, Any], tmp_path: Path, scripts: None
) -> None:
    import report

    readme = tmp_path / "README.md"
    readme.write_text("# x\n\nbefore\n<!-- bench:start -->\nold\n<!-- bench:end -->\nafter\n")
    assert report.main([str(bench_run["path"]), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("# x\n\nbefore\n<!-- bench:start -->\n## Benchmarks")
    assert text.endswith("<!-- bench:end -->\nafter\n") and "\nold\n" not in text
    assert "![DataLoader samples/s" in text and "### What can this machine do at all?" in text
    assert text.count("| measure | p50 |") == len(bench_run["run"]["scripts"]) + 1
    first = text
    report.main([str(bench_run["path"]), "--readme", str(readme)])
    assert readme.read_text() == first  # generated: the same JSON gives the same section
    readme.write_text("no markers\n")
    with pytest.raises(SystemExit):
        report.main([str(bench_run["path"]), "--readme", str(readme)])


def test_a_script_runs_standalone(cache: Path, tmp_path: Path) -> None:
    """Without run_all: the script makes its own shards and store."""
    out = run_script("bench_store.py", "--smoke", "--cache", cache, "--results", tmp_path)
    assert "masks equal=True" in out and "allocator: " in out
    (path,) = tmp_path.glob("bench_store-smoke-*.json")
    assert json.loads(path.read_text())["summary"]


def test_demo_readback(tmp_path: Path) -> None:
    src, store = tmp_path / "src", tmp_path / "store"
    synth.synth_shards(src, [0, 1], 3, small=True, progress=False)
    assert pack(src, store, [0, 1], progress=False).ok
    out = run_script(
        "demo_readback.py", store, src, "--samples", "2", "--rounds", "1", "--results", tmp_path
    )
    assert "len(store) = 6" in out
    assert out.count(": bit-exact") == 3
    assert "round trip OK" in out
    assert "masks() ours" in out and "allocator: " in out
    assert json.loads(next(tmp_path.glob("demo_readback-*.json")).read_text())["rows"]


def test_demo_readback_reports_a_difference(tmp_path: Path, scripts: None) -> None:
    """The round-trip check must be able to fail: a changed byte or field is caught."""
    import demo_readback

    src, store = tmp_path / "src", tmp_path / "store"
    synth.synth_shards(src, [0], 2, small=True, progress=False)
    assert pack(src, store, [0], progress=False).ok
    source = demo_readback.read_source([src / "sa_000000.tar"])
    sample = next(s for s in demo_readback.open_store(store) if len(s) > 0)
    good = source[sample.image_id]
    assert demo_readback.differences(sample, good) == []
    bad_jpeg = type(good)(good.image_id, good.jpeg[:-1] + b"\x00", good.json)
    assert demo_readback.differences(sample, bad_jpeg) == ["JPEG bytes differ"]
    record = good.record()
    record["annotations"][0]["predicted_iou"] += 1e-12
    bad_field = type(good)(good.image_id, good.jpeg, json.dumps(record).encode())
    assert demo_readback.differences(sample, bad_field) == ["field predicted_iou differs"]


def test_common_helpers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scripts: None) -> None:
    import common

    times = common.measure(lambda: None, repeats=5, warmup=2)
    assert len(times) == 5 and all(t >= 0 for t in times)
    both = common.measure_side_by_side({"a": lambda: None, "b": lambda: None}, repeats=3)
    assert {k: len(v) for k, v in both.items()} == {"a": 3, "b": 3}
    assert common.p50([1.0, 2.0, 3.0]) == 2.0
    assert common.p95(list(range(101))) == 95.0 and common.p99(list(range(101))) == 99.0
    table = common.format_table(("name", "value"), [["x", 1.5], ["longer", 1234.0]])
    lines = table.splitlines()
    assert len(lines) == 4 and len({len(line) for line in lines[1:]}) == 1
    row = common.latency_row("op", [1e-4, 2e-4, 3e-4])
    assert (row["unit"], row["p50"], row["n"]) == ("µs", pytest.approx(200.0), 3)
    assert common.spread(10, 3, seed=0) == sorted(common.spread(10, 3, seed=0))
    assert len(set(common.spread(10, 3, seed=0))) == 3 and common.spread(2, 5, 0) == [0, 1]
    for key in [k for k in os.environ if k.startswith("MALLOC_")]:
        monkeypatch.delenv(key)
    assert common.allocator_settings() == "glibc defaults"
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    assert common.allocator_settings() == "MALLOC_ARENA_MAX=2"
    env = common.environment()
    assert {"python", "numpy", "numba", "pycocotools", "cpu_count", "date", "host"} <= set(env)
    path = common.write_results("unit", {"env": env, "x": [1, 2]}, tmp_path)
    assert path.parent == tmp_path and path.name.startswith("unit-")
    assert json.loads(path.read_text())["x"] == [1, 2]


def test_evict_keeps_mapped_data_readable(tmp_path: Path, scripts: None) -> None:
    """Eviction drops pages, never data: a mapped file reads back the same afterwards."""
    import common

    path = tmp_path / "data.bin"
    data = np.arange(1 << 20, dtype=np.uint8)
    data.tofile(path)
    mapped = np.memmap(path, dtype=np.uint8, mode="r")
    assert int(mapped.sum(dtype=np.int64)) == int(data.sum(dtype=np.int64))
    common.evict([path])
    assert np.array_equal(mapped, data)

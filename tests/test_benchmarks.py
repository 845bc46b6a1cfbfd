"""The benchmark scripts must keep running against the current API (STYLE.md, principle 11).

Each script is smoke-run as `make bench` / `make demo` run it, on tiny synthetic shards; only
completion and the shape of the report are checked, never a timing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from sa1b_pack import pack, synth

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"


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
        timeout=120,
    )
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
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
            if name in ("common", "bench_store", "bench_masks", "demo_readback", "payload_layout"):
                del sys.modules[name]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bench-cache")


def one_result(folder: Path, prefix: str) -> dict:
    files = sorted(folder.glob(f"{prefix}-*.json"))
    assert len(files) == 1, files
    return json.loads(files[0].read_text())


def test_bench_store_smoke(cache: Path, tmp_path: Path) -> None:
    out = run_script("bench_store.py", "--smoke", "--cache", cache, "--results", tmp_path)
    assert out.startswith("$ ")  # the exact command comes first
    assert "allocator: " in out
    for row in ("pack jobs=1", "pack jobs=2", "store[i]", "masks() ours", "pycocotools decode"):
        assert row in out
    assert "memset fill(0)" in out and "baseline: PIL+json+coco" in out
    assert "store bytes / source tar bytes" in out
    assert "masks equal=True" in out
    result = one_result(tmp_path, "bench_store-smoke")
    assert result["environment"]["allocator"]
    assert {r["measure"] for r in result["rows"]} >= {"pack jobs=1", "masks() ours, out= reused"}
    assert not list(tmp_path.glob("*.tmp"))


def test_bench_masks_smoke(cache: Path, tmp_path: Path) -> None:
    out = run_script("bench_masks.py", "--smoke", "--cache", cache, "--results", tmp_path)
    assert out.startswith("$ ")
    assert "allocator: " in out and "numba threads: " in out
    for row in (
        "ours masks(out=), serial kernel",
        "ours parse + decode(parallel=True)",
        "pycocotools decode -> (N,H,W)",
        "memset fill(0)",
        "memset fill(1)",
        "pycocotools + PIL nearest",
        "pycocotools + PIL ResizeLongest",
        "ours mask_iou()",
        "counts.bin: COCO strings (stored)",
        "uint32 runs (format v1)",
        "from pre-parsed runs",
    ):
        assert row in out, row
    assert "full == pycocotools True, parallel == serial True" in out
    assert "IoU == pycocotools on every sample True" in out
    result = one_result(tmp_path, "bench_masks-smoke")
    assert result["environment"]["allocator"] and result["environment"]["numba_threads"] >= 1
    storage = next(rows for title, rows in result["tables"].items() if "storage" in title)
    by_name = {r["measure"]: r for r in storage}
    assert by_name["counts.bin: COCO strings (stored)"]["p50"] > 0
    assert result["bytes"]["runs"] > result["bytes"]["strings"] > 0
    assert all(len(v) == 2 for w in result["raw_round_seconds"].values() for v in w.values())
    assert not list(tmp_path.glob("*.tmp"))


def test_bench_loader_smoke(cache: Path, tmp_path: Path) -> None:
    out = run_script("bench_loader.py", "--smoke", "--cache", cache, "--results", tmp_path)
    assert out.startswith("$ ") and "allocator: " in out
    for row in ("ours W=0", "ours W=2 fork", "ours W=2 spawn", "baseline W=0", "JPEG floor"):
        assert row in out, row
    assert "same masks drawn=True" in out  # the baseline draws the masks ours does
    result = one_result(tmp_path, "bench_loader-smoke")
    rows = {r["measure"]: r for r in result["rows"]}
    assert rows["ours W=0"]["p50"] > 0 and rows["baseline W=2 fork"]["p50"] > 0
    assert set(result["first_epochs"]) >= {"ours W=2 spawn", "baseline W=2 fork"}
    assert not list(tmp_path.glob("*.tmp"))


def test_payload_layout_smoke(cache: Path, tmp_path: Path) -> None:
    out = run_script("payload_layout.py", "--smoke", "--cache", cache, "--results", tmp_path)
    assert "np.memmap (store)" in out and "zarr v3, blosc zstd-3 shuffle" in out
    assert "allocator: " in out
    rows = one_result(tmp_path, "payload_layout-smoke")["rows"]
    # jpeg and counts, each as memmap + 2 codecs x 2 chunk sizes
    assert len(rows) == 10
    assert all(r["bytes"] > 0 for r in rows)


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
    assert one_result(tmp_path, "demo_readback")["rows"]


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
    assert common.p95(list(range(101))) == 95.0
    table = common.format_table(("name", "value"), [["x", 1.5], ["longer", 1234.0]])
    lines = table.splitlines()
    assert len(lines) == 4 and len({len(line) for line in lines[1:]}) == 1
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

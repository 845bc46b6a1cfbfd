"""benchmarks/gpu.py (not in `make bench`: CI has no GPU) must not rot: its whole flow runs
here on the CPU at smoke size, and without a GPU it refuses device="cuda" with a clear
message. Only completion and the report's shape are checked, never a timing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the device stage is torch code")
ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)  # fmt: skip


def test_smoke_run_on_the_cpu(tmp_path: Path) -> None:
    proc = run("--device", "cpu", "--smoke", "--json", str(tmp_path / "out.json"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = json.loads((tmp_path / "out.json").read_text())
    exact = out["exactness"]
    assert exact["masks_compared"] > 0 and exact["masks_different"] == 0
    assert exact["fields_or_padding_different"] == 0
    assert [(r["batch"], r["loader"].startswith("device")) for r in out["throughput"]] == [
        (b, d) for b in (8, 32, 64) for d in (True, False)
    ]
    assert out["memory"]["batches"] == 20
    assert "| loader | batch | samples/s | CPU ms/sample |" in proc.stdout


@pytest.mark.skipif(
    __import__("torch").cuda.is_available(), reason="checks the message on machines without GPU"
)
def test_without_a_gpu_it_says_so() -> None:
    proc = run()
    assert proc.returncode == 2 and "no CUDA device" in proc.stderr

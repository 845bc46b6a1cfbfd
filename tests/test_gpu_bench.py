"""`make bench`'s gpu question must not rot on machines without a GPU: its whole flow runs here
on the CPU at smoke size (the device path with device="cpu"), and without a CUDA device the
full-size question is skipped with the reason. Only completion and the rows are checked,
never a timing."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the device stage is torch code")
BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))
import harness as h  # noqa: E402
from gpu import gpu, unavailable  # noqa: E402


def test_smoke_run_on_the_cpu(packed_dir: Path, tmp_path: Path) -> None:
    result = gpu(h.Ctx([], packed_dir, tmp_path, smoke=True))
    rows = {r["measure"]: r for r in result.rows}
    assert not result.skipped and result.notes
    assert rows["masks that differ from the CPU loader's"]["p50"] == 0
    assert rows["other fields or padding that differ"]["p50"] == 0
    assert "of 0 compared" not in rows["masks that differ from the CPU loader's"]["what"]
    for batch in (8, 32, 64):
        for loader in ("device=cpu", f"CPU, {os.cpu_count() or 1} threads"):
            assert rows[f"{loader}, batch {batch}"]["p50"] > 0
            assert f"CPU time per sample, {loader}, batch {batch}" in rows
    assert rows["GPU memory allocated, every 100 batches"]["n"] >= 1  # batch 1, then every 100
    assert "GPU memory growth after batch 100" in rows


@pytest.mark.skipif(
    __import__("torch").cuda.is_available(), reason="checks the message on machines without GPU"
)
def test_without_a_gpu_the_question_says_why(tmp_path: Path) -> None:
    assert "no CUDA device" in (unavailable("cuda") or "")
    result = gpu(h.Ctx([], tmp_path / "no store needed", tmp_path))  # not smoke: device cuda
    assert result.rows == [] and "no CUDA device" in result.skipped[0]

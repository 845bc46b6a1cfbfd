"""Smoke run of benchmarks/remote_reads.py (tiny shards): it must finish and report."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_remote_reads_smoke(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "benchmarks/remote_reads.py", "--smoke", "--images", "3",
         "--results", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "S3: + jpeg bytes" in result.stdout and "pack to S3" in result.stdout
    assert list(tmp_path.glob("remote_reads-smoke-*.json"))

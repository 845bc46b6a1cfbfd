"""The kernels under numba's bounds checking and as plain Python: same answers, no stray writes.

numba does not bounds-check by default, so an off-by-one in a kernel would write past an array
silently. These run the codec tests again in a fresh process with NUMBA_BOUNDSCHECK=1 (every
index checked, an IndexError on any stray access) and with NUMBA_DISABLE_JIT=1 (the debugging
switch the kernels promise).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import numba, numpy as np
@numba.njit
def poke(a, i):
    a[i] = 1
try:
    poke(np.zeros(3), 3)
except IndexError:
    print("bounds checked")
"""


def run(env_extra: dict[str, str], *args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, **env_extra, "NUMBA_CACHE_DIR": str(tmp_path / "numba-cache")}
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.mark.slow
def test_codec_tests_pass_with_bounds_checking(tmp_path: Path) -> None:
    probe = run({"NUMBA_BOUNDSCHECK": "1"}, "-c", PROBE, tmp_path=tmp_path)
    assert probe.stdout.strip() == "bounds checked", probe.stderr
    result = run(
        {"NUMBA_BOUNDSCHECK": "1"},
        "-m", "pytest", "-q", "-p", "no:cacheprovider",
        "tests/codec/test_rle.py", "tests/testing/test_rle_reference.py",
        "tests/codec/test_prompt_kernels.py", tmp_path=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert " passed" in result.stdout and " failed" not in result.stdout


def test_kernels_run_as_plain_python(tmp_path: Path) -> None:
    result = run(
        {"NUMBA_DISABLE_JIT": "1"},
        "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/codec/test_rle.py",
        "-k", "edge_cases or zero_length or malformed or refuses or padded or parse_strings",
        tmp_path=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert " passed" in result.stdout and " failed" not in result.stdout

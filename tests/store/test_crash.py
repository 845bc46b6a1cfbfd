"""Kill a real packer at every step of a commit; the store must be whole at every moment.

``SA1B_PACK_CRASH_AT`` makes the packer SIGKILL itself at a named point (sa1b_pack/faults.py):
mid-tar, after a part is written, after it is renamed into place, after the new manifest is
written but before it replaces the old one, and just after it does. Random-time kills cover
what lies between. After each kill the store lists only complete shards; resuming gives
exactly the manifest of a clean pack.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from sa1b_pack import open_store, pack
from sa1b_pack.store.manifest import file_digest, read_manifest
from sa1b_pack.testing.synth import synth_shards

SHARDS = [0, 1, 2]


def cli_pack(src: Path, dst: Path, crash_at: str | None = None) -> subprocess.Popen:
    env = dict(os.environ)
    env.pop("SA1B_PACK_CRASH_AT", None)
    if crash_at:
        env["SA1B_PACK_CRASH_AT"] = crash_at
    return subprocess.Popen(
        [sys.executable, "-m", "sa1b_pack", "pack", str(src), str(dst), "--quiet"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def assert_whole(dst: Path) -> list[str]:
    """Every listed shard intact and readable; returns the listed shard names."""
    if not (dst / "manifest.json").exists():
        return []
    listed = read_manifest(dst)["shards"]
    store = open_store(dst)
    for name, entry in listed.items():
        for f, digest in entry["files"].items():
            assert file_digest(dst / "parts" / name / f) == digest, (name, f)
    for i in range(len(store)):
        s = store[i]
        assert s.masks(size=(8, 8)).shape == (len(s), 8, 8)
    return sorted(listed)


def resume_and_compare(src: Path, dst: Path, clean: Path) -> None:
    report = pack(src, dst, SHARDS, progress=False)
    assert report.ok
    assert read_manifest(dst)["shards"] == read_manifest(clean)["shards"]
    assert sorted(p.name for p in (dst / "parts").iterdir()) == [f"sa_{i:06d}" for i in SHARDS]


@pytest.fixture(scope="module")
def clean(packed_dir: Path) -> Path:
    return packed_dir


@pytest.mark.parametrize(
    ("crash_at", "committed"),
    [
        ("member@12", 0),  # mid-tar, first shard
        ("part-written@1", 0),  # part complete in its temp folder
        ("part-renamed@1", 0),  # renamed into place, not yet listed
        ("manifest-written@2", 0),  # new manifest fsynced beside the old, not yet renamed
        ("manifest-replaced@2", 1),  # renamed: shard 0 committed
        ("member@30", 1),  # mid-tar, second shard
        ("manifest-written@3", 1),
        ("manifest-replaced@4", 3),  # the last commit
    ],
)
def test_kill_at_each_commit_step_then_resume(
    crash_at: str, committed: int, source_dir: Path, clean: Path, tmp_path: Path
) -> None:
    dst = tmp_path / "store"
    proc = cli_pack(source_dir, dst, crash_at)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, err.decode()
    assert len(assert_whole(dst)) == committed
    resume_and_compare(source_dir, dst, clean)


@pytest.fixture(scope="module")
def busy_source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, float]:
    """3 shards x 60 small images, its clean store, and how long packing it takes."""
    root = tmp_path_factory.mktemp("busy")
    synth_shards(root / "src", SHARDS, 60, small=True, seed=5, progress=False)
    start = time.perf_counter()
    assert pack(root / "src", root / "clean", SHARDS, progress=False).ok
    return root / "src", root / "clean", time.perf_counter() - start


def test_kill_at_random_moments_then_resume(busy_source, tmp_path: Path) -> None:
    """Kills at random times while packing runs (after the first manifest write): 6 runs, and
    more until 3 were killed before they finished; a run that finished first halves the range
    of waits, so a machine busier or idler than when ``duration`` was measured costs runs only."""
    src, clean, duration = busy_source
    rng = random.Random(1)
    dst = tmp_path / "store"
    kills, runs = 0, 0
    while runs < 6 or kills < 3:
        assert runs < 20, f"only {kills} of {runs} runs were killed before they finished"
        runs += 1
        proc = cli_pack(src, dst)
        deadline = time.monotonic() + 60
        while not (dst / "manifest.json").exists() and proc.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.001)
        time.sleep(rng.uniform(0, duration))
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        if proc.returncode == -signal.SIGKILL:
            kills += 1
        else:
            duration /= 2  # it finished first: aim earlier
        assert_whole(dst)
        if len(read_manifest(dst)["shards"]) == len(SHARDS):
            shutil.rmtree(dst)  # finished: start over, so later kills land mid-run too
    resume_and_compare(src, dst, clean)


def test_a_reader_sees_the_store_as_it_was_when_opened(source_dir: Path, tmp_path: Path) -> None:
    dst = tmp_path / "store"
    assert pack(source_dir, dst, [0], progress=False).ok
    early = open_store(dst)
    before = [(s.image_id, s.masks().sum()) for s in early]
    assert pack(source_dir, dst, [1, 2], progress=False).ok
    assert [(s.image_id, s.masks().sum()) for s in early] == before
    assert early.shards == ["sa_000000"]
    late = open_store(dst)
    assert len(late) > len(early) and late.shards == [f"sa_{i:06d}" for i in SHARDS]
    assert np.array_equal(late[0].masks(), early[0].masks())

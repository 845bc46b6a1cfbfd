"""What the store remembers about its sources: failed shards, damaged tars, tars replaced
since they were packed, and image ids held by two shards."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from sa1b_pack import open_store
from sa1b_pack.cli import main
from sa1b_pack.source.identity import source_change, source_identity
from sa1b_pack.store.manifest import read_manifest
from sa1b_pack.write.packer import pack


def shard(tools, folder: Path, index: int, ids: list[int], seed: int = 0) -> Path:
    members = [m for i in ids for m in tools.sample_members(i, seed=seed)]
    return tools.write_tar(folder / f"sa_{index:06d}.tar", members)


def cut(path: Path, keep: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_identity_ignores_copies_and_sees_changes(tools, tmp_path: Path) -> None:
    tar = shard(tools, tmp_path, 0, [1, 2])
    recorded = source_identity(tar)
    assert recorded["bytes"] == tar.stat().st_size and len(recorded["fingerprint"]) == 32
    assert source_change(recorded, tar) is None
    os.utime(tar, (1, 1))  # copied or touched: new mtime, same bytes
    assert source_change(recorded, tar) is None
    shard(tools, tmp_path, 0, [1, 2], seed=9)  # re-made: same size, other content
    assert tar.stat().st_size == recorded["bytes"]
    assert "different content" in source_change(recorded, tar)
    cut(tar, 0.5)
    assert "bytes now" in source_change(recorded, tar)


def test_failed_shard_recorded_listed_and_retried(tools, tmp_path: Path, capsys) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    shard(tools, src, 0, [1, 2])
    bad = shard(tools, src, 1, [3, 4])
    bad.write_bytes(b"<html><body>403 Forbidden</body></html>")
    report = pack(src, dst, [0, 1], progress=False)
    assert not report.ok and "sa_000001" in report.failed
    manifest = read_manifest(dst)
    assert list(manifest["failed"]) == ["sa_000001"] and "sa_000001" not in manifest["shards"]
    assert main(["errors", str(dst)]) == 0
    out = capsys.readouterr().out
    assert "sa_000001\tfailed\t" in out and "an HTML page" in out and "fresh links file" in out
    assert open_store(dst).info()["failed_shards"] == 1
    shard(tools, src, 1, [3, 4])  # downloaded again
    report = pack(src, dst, [0, 1], progress=False)
    assert report.ok and report.packed == ["sa_000001"]
    assert read_manifest(dst).get("failed") == {} and len(open_store(dst)) == 4


def test_damaged_tar_packed_up_to_the_break_then_repacked_when_whole(tools, tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    whole = shard(tools, src, 0, [1, 2, 3]).read_bytes()
    cut(src / "sa_000000.tar", 0.8)
    assert not pack(src, dst, [0], progress=False).ok  # fail mode: the shard fails
    report = pack(src, dst, [0], progress=False, on_error="skip")
    assert report.ok and report.damaged["sa_000000"][1].endswith("(truncated download?)")
    store = open_store(dst)
    kept = len(store)
    assert 1 <= kept < 3 and store.info()["damaged_shards"] == 1
    assert any(row["kind"] == "damaged" for row in store.errors())
    again = pack(src, dst, [0], progress=False, on_error="skip")  # same tar: left as it is
    assert again.skipped_existing == ["sa_000000"] and not again.packed
    (src / "sa_000000.tar").write_bytes(whole)  # the fresh download
    report = pack(src, dst, [0], progress=False, on_error="skip")
    assert report.packed == ["sa_000000"] and not report.damaged
    store = open_store(dst)
    assert len(store) == 3 and "damage" not in store.manifest["shards"]["sa_000000"]
    assert sorted(p.name for p in (dst / "parts").iterdir()) == [
        Path(store.storage.part_path("sa_000000", store.manifest["shards"]["sa_000000"])).name
    ]


def test_changed_source_refused_then_repacked(tools, tmp_path: Path, capsys) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    shard(tools, src, 0, [1, 2])
    assert pack(src, dst, [0], progress=False).ok
    before = open_store(dst)
    old = before[0].masks().copy()
    shard(tools, src, 0, [1, 2], seed=5)  # a different mirror's file
    report = pack(src, dst, [0], progress=False)
    assert not report.ok and "--repack" in report.changed["sa_000000"]
    assert read_manifest(dst)["shards"] == before.manifest["shards"]  # untouched
    assert main(["pack", str(src), str(dst), "--quiet"]) == 1
    assert "changed since it was packed" in capsys.readouterr().err
    assert main(["pack", str(src), str(dst), "--quiet", "--repack"]) == 0
    after = open_store(dst)
    assert not np.array_equal(after[0].masks(), old)
    assert np.array_equal(before[0].masks(), old)  # a reader opened before keeps its view
    assert pack(src, dst, [0], progress=False).skipped_existing == ["sa_000000"]


def test_duplicate_ids_across_shards(tools, tmp_path: Path, capsys) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    shard(tools, src, 0, [1, 2, 3])
    shard(tools, src, 1, [3, 4])
    shard(tools, src, 2, [10, 11])  # disjoint range: never opened by the check
    report = pack(src, dst, [0, 1, 2], progress=False)
    assert report.ok
    assert report.duplicates == {"sa_000001": [["sa_000000", 1, [3]]]}
    store = open_store(dst)
    assert store.info()["duplicate_ids"] == 1
    assert main(["errors", str(dst)]) == 0
    assert "sa_000001\tduplicate\t\t1 image ids also in sa_000000: 3" in capsys.readouterr().out
    with pytest.raises(ValueError, match=r"image id 3 is in 2 shards \(sa_000000, sa_000001\)"):
        store.index_of(3)
    first, second = store.indices_of(3)
    assert (first, store[first].image_id) == (2, 3)
    assert store.index_of(3, shard="sa_000001") == second and store[second].image_id == 3
    assert store.index_of(4) == second + 1
    with pytest.raises(KeyError):
        store.index_of(4, shard="sa_000000")

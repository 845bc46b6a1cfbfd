"""Manifest commits as deltas (store/journal.py): what readers see, what each commit writes,
version 2 stores, object storage, and kills at every step of a delta commit or compaction."""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from sa1b_pack import StoreError, open_store, pack
from sa1b_pack.storage import storage_for
from sa1b_pack.store import journal
from sa1b_pack.store.manifest import empty_manifest, read_manifest, settle_manifest, write_manifest

REPO = Path(__file__).resolve().parents[2]


def entry(i: int) -> dict:
    """A manifest entry of a realistic size (~1.4 KB as JSON) for shard i."""
    files = {f: {"bytes": i, "sha256": f"{i:064x}"} for f in
             ("images.parquet", "images.arrow", "annotations.parquet", "annotations.arrow",
              "jpeg.bin", "counts.bin", "resized.bin")}  # fmt: skip
    return {"index": i, "images": 11, "masks": 700, "files": files, "skipped_members": [],
            "source": {"file": f"sa_{i:06d}.tar", "bytes": i}, "image_ids": [i, i + 1]}  # fmt: skip


def commit_shards(root, manifest: dict, indices) -> dict:
    """Commit each shard as the packer does: its entry alone."""
    storage = storage_for(root)
    for i in indices:
        manifest["shards"][f"sa_{i:06d}"] = entry(i)
        write_manifest(storage, manifest, changed=[f"sa_{i:06d}"])
    return manifest


def files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_deltas_merge_and_settle_at_rest(tmp_path: Path) -> None:
    manifest = commit_shards(tmp_path, empty_manifest(), range(10))
    assert read_manifest(tmp_path) == manifest
    deltas = [f for f in files(tmp_path) if f.startswith("manifests/")]
    assert deltas == [f"manifests/{g:010d}.delta.json" for g in (8, 9, 10)]
    on_disk = orjson.loads((tmp_path / "manifest.json").read_bytes())
    assert on_disk["format_version"] == 3 and len(on_disk["shards"]) == 7  # a reader of v2 refuses
    settle_manifest(storage_for(tmp_path), manifest)
    assert files(tmp_path) == ["manifest.json"]  # at rest: one file, version 2, every shard
    on_disk = orjson.loads((tmp_path / "manifest.json").read_bytes())
    assert on_disk["format_version"] == 2 and len(on_disk["shards"]) == 10
    assert read_manifest(tmp_path) == manifest
    # a store at rest that gets one more shard, then another run: no delta follows v2
    commit_shards(tmp_path, manifest, [10])
    assert files(tmp_path) == ["manifest.json"] and read_manifest(tmp_path) == manifest


def test_failed_shards_and_top_level_fields_travel_in_deltas(tmp_path: Path) -> None:
    manifest = commit_shards(tmp_path, empty_manifest(), range(8))  # manifest.json: 7 shards
    storage = storage_for(tmp_path)
    manifest["failed"] = {"sa_000009": {"reason": "no such tar"}}
    write_manifest(storage, manifest, changed=[])
    manifest["attached"] = {"teacher": {"dtype": "<f2", "shape": [4], "nbytes": 8}}
    manifest["shards"]["sa_000001"]["attached"] = {"teacher": {"file": "x", "missing": []}}
    write_manifest(storage, manifest, changed=["sa_000001"])
    del manifest["shards"]["sa_000002"]
    manifest.pop("failed")
    write_manifest(storage, manifest, changed=["sa_000002"])
    assert [f for f in files(tmp_path) if f.endswith(".delta.json")] == [
        f"manifests/{g:010d}.delta.json" for g in (8, 9, 10, 11)
    ]
    assert read_manifest(tmp_path) == manifest


def test_delta_bytes_do_not_grow_with_the_store(tmp_path: Path) -> None:
    """Between compactions a commit writes one entry, whatever k; compactions come at most
    every COMPACT_EVERY commits, so bytes per commit stay ~ one entry + k / 64 entries."""
    one = len(orjson.dumps(entry(0), option=orjson.OPT_INDENT_2))
    storage = storage_for(tmp_path)
    written = []
    storage.save_delta = lambda body, g, save=storage.save_delta: (
        written.append(("delta", len(body))), save(body, g))  # fmt: skip
    storage.save_manifest = lambda body, g, save=storage.save_manifest: (
        written.append(("full", len(body))), save(body, g))  # fmt: skip
    manifest = empty_manifest()
    for i in range(300):
        manifest["shards"][f"sa_{i:06d}"] = entry(i)
        write_manifest(storage, manifest, changed=[f"sa_{i:06d}"])
    deltas = [n for kind, n in written if kind == "delta"]
    fulls = [i for i, (kind, _) in enumerate(written) if kind == "full"]
    assert len(deltas) > 200 and max(deltas) < 2 * one
    assert max(b - a for a, b in itertools.pairwise(fulls)) == journal.COMPACT_EVERY + 1
    assert read_manifest(tmp_path) == manifest
    assert len(list((tmp_path / "manifests").iterdir())) <= journal.COMPACT_EVERY


def test_version_2_store_reads_and_grows(
    packed_dir: Path, source_dir: Path, tmp_path: Path
) -> None:
    """A store as sa1b_pack wrote it before deltas: manifest.json alone, no generation."""
    store = tmp_path / "store"
    shutil.copytree(packed_dir, store, ignore=shutil.ignore_patterns("index"))
    manifest = read_manifest(store)
    dropped = manifest["shards"].pop("sa_000002")
    v2 = {**manifest, "format_version": 2}
    (store / "manifest.json").write_bytes(orjson.dumps(v2, option=orjson.OPT_INDENT_2))
    assert read_manifest(store) == manifest
    assert len(open_store(store)) == sum(e["images"] for e in manifest["shards"].values())
    assert pack(source_dir, store, [0, 1, 2], progress=False).packed == ["sa_000002"]
    assert read_manifest(store)["shards"]["sa_000002"] == dropped
    assert files(store)[:1] == [".pack.lock"] and "manifests" not in os.listdir(store)


@pytest.mark.parametrize(("version", "ok"), [(2, True), (3, True), (4, False), (1, False)])
def test_format_versions_read(tmp_path: Path, version: int, ok: bool) -> None:
    body = {**empty_manifest(), "format_version": version}
    (tmp_path / "manifest.json").write_bytes(orjson.dumps(body))
    if ok:
        assert read_manifest(tmp_path)["format_version"] == 2  # the store's; 3 is the file's
    else:
        with pytest.raises(StoreError, match=f"version {version}; this sa1b_pack reads version 2"):
            read_manifest(tmp_path)


def test_stale_deltas_are_skipped_and_gaps_refused(tmp_path: Path) -> None:
    manifest = commit_shards(tmp_path, empty_manifest(), range(10))
    stale = orjson.loads((tmp_path / "manifests/0000000009.delta.json").read_bytes())
    stale.update(generation=2, shards={"sa_000099": entry(99)})  # as a dead compaction leaves
    (tmp_path / "manifests/0000000002.delta.json").write_bytes(orjson.dumps(stale))
    (tmp_path / "manifests/.0000000011.delta.json.tmp-1").write_bytes(b"{half")  # killed
    assert read_manifest(tmp_path) == manifest
    (tmp_path / "manifests/0000000009.delta.json").unlink()  # a hole: never skipped over
    with pytest.raises(StoreError, match="out of sequence"):
        read_manifest(tmp_path)


def test_a_reader_racing_a_compaction_reads_again(tmp_path: Path) -> None:
    manifest = commit_shards(tmp_path, empty_manifest(), range(10))
    storage = storage_for(tmp_path)
    old = (tmp_path / "manifest.json").read_bytes()  # before the compaction below
    commit_shards(tmp_path, manifest, range(10, 17))  # compacts at 15, dropping deltas 8-14
    real, calls = storage.load_manifest, []

    def racing() -> tuple[bytes, list[bytes]]:
        calls.append(1)
        full, deltas = real()
        return (old, deltas) if len(calls) == 1 else (full, deltas)

    storage.load_manifest = racing
    assert journal.read(storage) == manifest and len(calls) == 2


def test_object_storage_deltas_never_overwrite(tmp_path: Path) -> None:
    import fsspec

    url = "memory://journal-test/store"
    manifest, seen = empty_manifest(), {}
    fs = fsspec.filesystem("memory")
    for i in range(12):
        commit_shards(url, manifest, [i])
        for path in fs.ls("/journal-test/store/manifests", detail=False):
            body = fs.cat_file(path)
            assert seen.setdefault(path, body) == body  # written once, never replaced
        assert read_manifest(url) == manifest
    assert sum(p.endswith(".delta.json") for p in seen) >= 7
    settle_manifest(storage_for(url), manifest)
    newest = sorted(fs.ls("/journal-test/store/manifests", detail=False))[-1]
    assert not newest.endswith(".delta.json")
    assert orjson.loads(fs.cat_file(newest))["format_version"] == 2
    assert read_manifest(url) == manifest
    fs.rm("/journal-test", recursive=True)


COMMITTER = """
import sys
from sa1b_pack.store.manifest import empty_manifest, settle_manifest, write_manifest
from sa1b_pack.storage import storage_for
from tests.store.test_journal import entry
storage, manifest = storage_for(sys.argv[1]), empty_manifest()
for i in range(int(sys.argv[2])):
    manifest["shards"][f"sa_{i:06d}"] = entry(i)
    write_manifest(storage, manifest, changed=[f"sa_{i:06d}"])
settle_manifest(storage, manifest)
"""
SHARDS = 12  # full at 1, 3, 7; deltas 2, 4-6, 8-12; then at rest: writes 1-13


@pytest.mark.parametrize(
    ("crash_at", "committed"),
    [
        ("manifest-written@2", 1),  # the first delta fsynced beside, not yet renamed
        ("manifest-replaced@2", 2),  # renamed: committed
        ("manifest-written@3", 2),  # a compaction written, not yet replacing manifest.json
        ("manifest-replaced@7", 7),  # the compaction replaced it; 3 deltas not yet dropped
        ("delta-dropped@2", 7),  # one of them dropped, two left: readers skip them
        ("manifest-replaced@10", 10),
        ("manifest-written@13", 12),  # settling: v3 manifest + deltas still the truth
        ("delta-dropped@9", 12),  # settled, dropping the last deltas
    ],
)
def test_kill_at_each_step_of_a_delta_commit(tmp_path: Path, crash_at: str, committed: int):
    env = {**os.environ, "PYTHONPATH": str(REPO), "SA1B_PACK_CRASH_AT": crash_at}
    proc = subprocess.run([sys.executable, "-c", COMMITTER, str(tmp_path), str(SHARDS)],
                          env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    shards = read_manifest(tmp_path)["shards"]
    assert shards == {f"sa_{i:06d}": entry(i) for i in range(committed)}
    # a writer resuming from what it reads finishes the job, at rest
    manifest = read_manifest(tmp_path)
    commit_shards(tmp_path, manifest, range(committed, SHARDS))
    settle_manifest(storage_for(tmp_path), manifest)
    assert files(tmp_path) == ["manifest.json"]
    assert read_manifest(tmp_path)["shards"] == {f"sa_{i:06d}": entry(i) for i in range(SHARDS)}

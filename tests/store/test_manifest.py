"""The manifest: atomic writes, format checks, digests, and the single-writer lock."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from sa1b_pack import StoreError, open_store
from sa1b_pack.storage import storage_for
from sa1b_pack.store.manifest import (
    empty_manifest,
    file_digest,
    read_manifest,
    write_manifest,
)
from sa1b_pack.write.packer import pack

REPO = Path(__file__).resolve().parents[2]


def test_write_then_read(tmp_path: Path) -> None:
    manifest = empty_manifest()
    manifest["shards"] = {"sa_000002": {"index": 2}, "sa_000000": {"index": 0}}
    write_manifest(tmp_path, manifest)
    assert read_manifest(tmp_path) == manifest
    assert list(read_manifest(tmp_path)["shards"]) == ["sa_000000", "sa_000002"]
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]  # no temp file left


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (None, "no manifest.json"),
        (b"{not json", "corrupt"),
        (b"[]", "not a sa1b_pack manifest"),
        (b'{"format": "other", "format_version": 1, "shards": {}}', "not a sa1b_pack"),
        (b'{"format": "sa1b_pack", "format_version": 1, "shards": {}}', "version 1"),
        (b'{"format": "sa1b_pack", "format_version": 99, "shards": {}}', "version 99"),
        (b'{"format": "sa1b_pack", "shards": {}}', "version None"),
    ],
)
def test_read_manifest_errors(tmp_path: Path, body: bytes | None, match: str) -> None:
    if body is not None:
        (tmp_path / "manifest.json").write_bytes(body)
    with pytest.raises(StoreError, match=match):
        read_manifest(tmp_path)
    with pytest.raises(StoreError):
        open_store(tmp_path)


def test_pack_refuses_a_corrupt_manifest(tmp_path: Path, source_dir: Path) -> None:
    (tmp_path / "manifest.json").write_bytes(b"{truncated")
    with pytest.raises(StoreError, match="corrupt"):
        pack(source_dir, tmp_path, [0], progress=False)
    assert (tmp_path / "manifest.json").read_bytes() == b"{truncated"


def test_file_digest(tmp_path: Path) -> None:
    data = os.urandom(3 * (1 << 20) + 17)
    (tmp_path / "f").write_bytes(data)
    (tmp_path / "empty").write_bytes(b"")
    assert file_digest(tmp_path / "f") == {
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    assert file_digest(tmp_path / "empty") == {
        "bytes": 0,
        "sha256": hashlib.sha256(b"").hexdigest(),
    }


def test_second_packer_in_process_is_refused(tmp_path: Path, source_dir: Path) -> None:
    dst = tmp_path / "store"
    dst.mkdir()
    with storage_for(dst).writer_lock():
        with pytest.raises(StoreError, match=f"pid {os.getpid()}"):
            pack(source_dir, dst, [0], progress=False)
        with pytest.raises(StoreError, match="being packed"):
            with storage_for(dst).writer_lock():
                pass
    assert not (dst / "manifest.json").exists()
    assert not (dst / "parts").exists()
    report = pack(source_dir, dst, [0], progress=False)  # the lock is free again
    assert report.ok and report.packed == ["sa_000000"]


def test_lock_dies_with_its_process(tmp_path: Path, source_dir: Path) -> None:
    code = (
        "import sys, time\n"
        "from sa1b_pack.storage import storage_for\n"
        "with storage_for(sys.argv[1]).writer_lock():\n"
        "    print('locked', flush=True)\n"
        "    time.sleep(120)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(StoreError, match=f"pid {proc.pid}"):
            pack(source_dir, tmp_path, [0], progress=False)
    finally:
        proc.kill()
        proc.communicate()
    report = pack(source_dir, tmp_path, [0], progress=False)
    assert report.ok and report.packed == ["sa_000000"]
    assert orjson.loads((tmp_path / "manifest.json").read_bytes())["shards"].keys() == {"sa_000000"}

"""A manifest's part paths are confined to the store: a store copied from someone else whose
manifest points a part at ``../../somewhere``, an absolute path or a nested folder is refused
with a StoreError naming the part, before any file outside the store is opened."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sa1b_pack import StoreError, open_store, pack, verify
from sa1b_pack.storage import storage_for
from sa1b_pack.store.manifest import read_manifest, write_manifest

ESCAPES = ["../../somewhere", "/etc", "parts/../../outside", "parts/a/b", "parts/..", "parts/",
           "s3://other-bucket/parts/x", "elsewhere/sa_000000"]  # fmt: skip


def point_first_part_at(store: str | Path, path: str) -> str:
    """Rewrite the manifest so its first shard's part lives at ``path``; that shard's name."""
    manifest = read_manifest(store)
    name = sorted(manifest["shards"])[0]
    manifest["shards"][name]["path"] = path
    write_manifest(store, manifest)
    return name


@pytest.mark.parametrize("path", ESCAPES)
def test_a_local_part_outside_the_store_is_refused(path: str, packed_dir: Path, tmp_path) -> None:
    store = tmp_path / "copy"
    shutil.copytree(packed_dir, store)
    (tmp_path / "somewhere").mkdir()  # what ../../somewhere would reach from parts/
    name = point_first_part_at(store, path)
    with pytest.raises(StoreError, match=rf"{name} puts its part at .*outside the store"):
        open_store(store)[0]
    assert any(
        name in problem and "outside" in problem for problem in verify(store, progress=False)
    )


def test_the_paths_the_backends_write_are_accepted(packed_dir: Path) -> None:
    storage = storage_for(packed_dir)
    entry = {"path": "parts/sa_000000"}
    assert storage.part_path("sa_000000", entry) == f"{storage.base}/parts/sa_000000"
    assert storage.part_path("sa_000001", {}) == f"{storage.base}/parts/sa_000001"  # default


@pytest.mark.parametrize("path", ["../../somewhere", "/etc"])
def test_an_object_store_part_outside_the_store_is_refused(path: str, s3_endpoint, source_dir,
                                                           tmp_path: Path) -> None:  # fmt: skip
    import s3fs

    s3fs.S3FileSystem(endpoint_url=s3_endpoint, skip_instance_cache=True).mkdir("bucket")
    url = "s3://bucket/confined"
    assert pack(source_dir, url, [0], progress=False).ok
    name = point_first_part_at(url, path)
    with pytest.raises(StoreError, match=rf"{name} puts its part at .*outside the store"):
        open_store(url)[0]  # read by byte range
    cached = open_store(url, cache_dir=tmp_path / "cache", cache_bytes=1 << 30)
    with pytest.raises(StoreError, match=rf"{name} puts its part at .*outside the store"):
        cached[0]  # read through the part cache

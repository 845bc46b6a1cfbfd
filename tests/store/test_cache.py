"""The local part cache of stores on object storage (a loopback S3 server): equal results,
a byte limit held by eviction, one download per part across processes, no half download
ever served, predownload ahead of the reads, released parts evicted first."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from sa1b_pack import StoreError, open_store, pack
from sa1b_pack.storage.cache import TMP

SHARDS = [0, 1, 2]
URL = "s3://bucket/cached"

READ_ALL = """
import hashlib, json, sys
from sa1b_pack import open_store
store = open_store(sys.argv[1], cache_dir=sys.argv[2], cache_bytes=int(sys.argv[3]))
digest = hashlib.sha256()
for i in range(len(store)):
    s = store[i]
    digest.update(bytes(s.jpeg))
    digest.update(s.masks().tobytes())
stats = store.storage.cache.stats
print(json.dumps({"digest": digest.hexdigest(), "downloads": stats.downloads}))
"""


@pytest.fixture
def remote(s3_endpoint: str, source_dir: Path) -> str:
    import s3fs

    s3fs.S3FileSystem(endpoint_url=s3_endpoint, skip_instance_cache=True).mkdir("bucket")
    assert pack(source_dir, URL, SHARDS, progress=False).ok
    return URL


def part_bytes(store) -> list[int]:
    return [sum(f["bytes"] for f in store.manifest["shards"][n]["files"].values())
            for n in store.shards]  # fmt: skip


def cached_bytes(directory: Path) -> int:
    return sum(f.stat().st_size for f in directory.rglob("*") if f.is_file()
               and f.suffix != ".lock" and f.name != ".lock")  # fmt: skip


def complete_parts(cache: Path) -> list[Path]:
    """Cached parts that got their name (not downloads in flight)."""
    return [p for p in cache.glob("*/*") if p.is_dir() and not p.name.startswith(TMP)]


def assert_same_samples(a, b) -> None:
    assert len(a) == len(b)
    for i in range(len(a)):
        x, y = a[i], b[i]
        assert (x.image_id, x.file_name, x.width, x.height) == (y.image_id, y.file_name,
                                                                y.width, y.height)  # fmt: skip
        assert bytes(x.jpeg) == bytes(y.jpeg)
        for field in ("mask_ids", "bbox", "area", "predicted_iou", "stability_score", "crop_box"):
            np.testing.assert_array_equal(getattr(x, field), getattr(y, field))
        np.testing.assert_array_equal(x.masks(), y.masks())
        assert x.document() == y.document()


def test_cached_reads_equal_local_and_download_once(remote: str, packed_dir: Path, tmp_path):
    store = open_store(remote, cache_dir=tmp_path / "cache", cache_bytes=10**9)
    assert_same_samples(store, open_store(packed_dir))
    stats = store.storage.cache.stats
    assert stats.downloads == len(SHARDS) and not stats.evicted
    requests = store.storage.stats.requests
    again = open_store(remote, cache_dir=tmp_path / "cache", cache_bytes=10**9)
    assert_same_samples(again, store)
    assert again.storage.cache.stats.downloads == 0  # a new process-level view: all hits
    assert store.storage.stats.requests == requests  # samples were read from local disk


def test_byte_limit_held_by_evicting_least_recently_used(remote: str, packed_dir, tmp_path):
    probe = open_store(remote)
    sizes = part_bytes(probe)
    limit = max(sizes) + min(sizes) // 2  # room for one part and a half: every read evicts
    cache = tmp_path / "cache"
    store = open_store(remote, cache_dir=cache, cache_bytes=limit, max_open_parts=1)
    local = open_store(packed_dir)
    for _round in range(2):
        for p in range(len(SHARDS)):
            i = store.part_start(p)
            assert bytes(store[i].jpeg) == bytes(local[i].jpeg)
            assert cached_bytes(cache) <= limit
    stats = store.storage.cache.stats
    assert stats.downloads == 2 * len(SHARDS) and len(stats.evicted) == 2 * len(SHARDS) - 1
    with pytest.raises(StoreError, match="more than the whole cache"):
        open_store(remote, cache_dir=tmp_path / "small", cache_bytes=min(sizes) - 1)[0]


@pytest.mark.slow
def test_two_processes_share_the_cache_without_duplicate_downloads(remote: str, tmp_path):
    argv = [sys.executable, "-c", READ_ALL, remote, str(tmp_path / "cache"), str(10**9)]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]  # fmt: skip
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert results[0]["digest"] == results[1]["digest"]
    assert sum(r["downloads"] for r in results) == len(SHARDS)


def test_a_killed_download_is_never_served(remote: str, packed_dir: Path, tmp_path: Path):
    cache = tmp_path / "cache"
    env = {**os.environ, "SA1B_PACK_CRASH_AT": "cache-file@3"}  # after 3 of the 7 files
    argv = [sys.executable, "-c", READ_ALL, remote, str(cache), str(10**9)]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    left = [p for p in cache.rglob(f"{TMP}*") if p.is_dir()]
    assert left, "the killed download left its temp folder"
    assert not complete_parts(cache)
    store = open_store(remote, cache_dir=cache, cache_bytes=10**9)
    assert_same_samples(store, open_store(packed_dir))
    assert store.storage.cache.stats.downloads == len(SHARDS)
    assert not [p for p in cache.rglob(f"{TMP}*") if p.is_dir()]


def test_predownload_fetches_ahead_of_the_reads(remote: str, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    store = open_store(remote, cache_dir=cache, cache_bytes=10**9)
    order = store.epoch_order(seed=0, epoch=0, order="blocks", window=1)
    store.predownload(order)
    deadline = time.monotonic() + 60
    while len(complete_parts(cache)) < len(SHARDS):
        assert time.monotonic() < deadline, "predownload did not finish"
        time.sleep(0.05)
    downloads = store.storage.cache.stats.downloads
    assert downloads == len(SHARDS)  # counted before a part's folder gets its name
    for i in order:
        assert store[int(i)].image_id > 0
    assert store.storage.cache.stats.downloads == downloads  # every read was a hit


def test_released_parts_go_first_and_only_they_make_room_for_predownloads(remote, tmp_path):
    sizes = part_bytes(open_store(remote))
    cache = tmp_path / "cache"
    store = open_store(remote, cache_dir=cache, cache_bytes=sum(sizes) - 1, max_open_parts=1)
    parts, storage = store.storage.cache, store.storage
    named = [(n, store.manifest["shards"][n]) for n in store.shards]
    for p in (0, 1):  # room for any two parts, not three
        assert store[store.part_start(p)].image_id > 0
    assert parts.get(storage, *named[2], evict="released") is None  # nothing released yet
    assert len(complete_parts(cache)) == 2 and not parts.stats.evicted
    parts.release(storage, *named[1])  # read last, but done with: it goes before part 0
    assert parts.get(storage, *named[2], evict="released") is not None
    assert [e.rsplit("-", 1)[0] for e in parts.stats.evicted] == [store.shards[1]]
    parts.release(storage, *named[2])
    again = open_store(remote, cache_dir=cache, cache_bytes=sum(sizes) - 1)  # another process
    assert again[again.part_start(1)].image_id > 0  # evicts the released part, not part 0
    assert [e.rsplit("-", 1)[0] for e in again.storage.cache.stats.evicted] == [store.shards[2]]
    assert parts.stats.downloads == 3 and again.storage.cache.stats.downloads == 1


def test_a_local_store_needs_no_cache(packed_dir: Path, tmp_path: Path) -> None:
    store = open_store(packed_dir, cache_dir=tmp_path / "cache", cache_bytes=1)
    assert store[0].image_id > 0 and store.storage.cache is None
    assert not (tmp_path / "cache").exists()
    store.predownload(np.arange(len(store)))  # nothing to do
    with pytest.raises(ValueError, match="cache_bytes"):
        open_store(packed_dir, cache_dir=tmp_path / "cache")


def test_dataset_workers_read_through_the_cache(remote: str, packed_dir: Path, tmp_path: Path):
    pytest.importorskip("torch", reason="optional dependency: pip install sa1b-pack[torch]")
    import torch
    from torch.utils.data import DataLoader

    from sa1b_pack.torch import SA1BDataset, collate

    recipe = dict(image_size=64, mask_size=16, max_masks=3)
    store = open_store(remote, cache_dir=tmp_path / "cache", cache_bytes=10**9)
    cached = SA1BDataset(store, **recipe)
    local = SA1BDataset(packed_dir, **recipe)
    assert cached.store is store and len(cached) == len(local)
    ours = list(DataLoader(cached, batch_size=4, num_workers=2, collate_fn=collate))
    theirs = list(DataLoader(local, batch_size=4, num_workers=0, collate_fn=collate))
    for a, b in zip(ours, theirs, strict=True):
        for key in ("image", "masks", "mask_ids", "boxes", "image_id"):
            assert torch.equal(a[key], b[key]), key
    # the workers filled one shared cache, once per part
    assert len(complete_parts(tmp_path / "cache")) == len(SHARDS)


def test_fork_workers_after_the_parent_read_by_range(remote: str, packed_dir: Path) -> None:
    """fsspec's async filesystems are not fork-safe: a store the parent read from (a sample
    by range, here uncached) must still serve forked DataLoader workers, each with its own."""
    pytest.importorskip("torch", reason="optional dependency: pip install sa1b-pack[torch]")
    from torch.utils.data import DataLoader

    store = open_store(remote)
    assert bytes(store[0].jpeg) and store.storage.stats.requests > 0  # the parent's loop runs
    loader = DataLoader(_Jpegs(store), batch_size=4, num_workers=2, collate_fn=list,
                        multiprocessing_context="fork")  # fmt: skip
    local = open_store(packed_dir)
    assert [j for batch in loader for j in batch] == [bytes(s.jpeg) for s in local]


class _Jpegs:
    """Each item read in the worker process, through the store the parent already used."""

    def __init__(self, store) -> None:
        self.store = store

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, i: int) -> bytes:
        return bytes(self.store[i].jpeg)

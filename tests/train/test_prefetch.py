"""The sampler drives the part cache of a store on object storage (a loopback S3 server):
each node downloads only the parts it reads, each once, the next ones ahead of the reads, and
evicts what it has read first. Outcomes only (which parts, how often), never timings."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from sa1b_pack import open_store, pack
from sa1b_pack.storage.cache import TMP
from sa1b_pack.train.sampler import EpochSampler

SHARDS = [0, 1, 2]
URL = "s3://bucket/fed"
DEADLINE = 60  # seconds a background download may take before the test fails


@pytest.fixture
def remote(s3_endpoint: str, source_dir: Path) -> str:
    import s3fs

    s3fs.S3FileSystem(endpoint_url=s3_endpoint, skip_instance_cache=True).mkdir("bucket")
    assert pack(source_dir, URL, SHARDS, progress=False).ok
    return URL


def cached(folder: Path) -> set[str]:
    """Shards whose complete part is in a cache folder."""
    return {p.name.rsplit("-", 1)[0] for p in folder.glob("*/*")
            if p.is_dir() and not p.name.startswith(TMP)}  # fmt: skip


def wait_for(condition) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, "the predownload did not get there"
        time.sleep(0.05)


def read_in_lockstep(stores, samplers) -> None:
    for step in zip(*samplers, strict=True):
        for store, (i, _) in zip(stores, step, strict=True):
            assert store[i].image_id > 0


@pytest.mark.parametrize("order", ["nodes", "blocks"])
def test_each_node_downloads_the_parts_it_reads_once(remote: str, tmp_path: Path, order: str):
    nodes, ranks = 2, 2
    folders = [tmp_path / f"node{n}" for n in range(nodes)]
    stores = [open_store(remote, cache_dir=folders[r // ranks], cache_bytes=10**9)
              for r in range(nodes * ranks)]  # fmt: skip
    samplers = [EpochSampler(s, nodes * ranks, r, order=order, ranks_per_node=ranks, window=1)
                for r, s in enumerate(stores)]  # fmt: skip
    read_in_lockstep(stores, samplers)
    names = stores[0].shards
    for n in range(nodes):
        downloads = sum(s.storage.cache.stats.downloads for s in stores[n * ranks : n * ranks + 2])
        if order == "blocks":  # every node reads from every part
            assert cached(folders[n]) == set(names) and downloads == len(names)
            continue
        plan = samplers[0].node_order()
        mine = {names[p] for k in (plan.dealt == n).nonzero()[0] for p in plan.members[k]}
        assert cached(folders[n]) == mine and downloads == len(mine)  # each once
    if order == "nodes":
        assert sorted(cached(folders[0]) | cached(folders[1])) == names
        assert not cached(folders[0]) & cached(folders[1])


def test_the_sampler_fetches_ahead_and_evicts_what_its_node_has_read(remote, tmp_path):
    probe = open_store(remote)
    sizes = [sum(f["bytes"] for f in probe.manifest["shards"][n]["files"].values())
             for n in probe.shards]  # fmt: skip
    folder = tmp_path / "cache"
    store = open_store(remote, cache_dir=folder, cache_bytes=sum(sizes) - 1)  # 2 parts, not 3
    sampler = EpochSampler(store, 1, 0, order="nodes", window=1, release_after=0)
    plan = sampler.node_order()
    first, second, third = [store.shards[p] for m in plan.members for p in m]
    stats = store.storage.cache.stats
    indices = iter(sampler)
    i, _ = next(indices)
    wait_for(lambda: cached(folder) == {first, second})  # before any read
    assert stats.downloads == 2
    while store.parts_of([i])[0] == store.shards.index(first):
        assert store[i].image_id > 0
        i, _ = next(indices)  # the node has moved past the first part: it is released
    wait_for(lambda: cached(folder) == {second, third})  # room made by evicting it
    assert [e.rsplit("-", 1)[0] for e in stats.evicted] == [first]
    for j in [i, *(j for j, _ in indices)]:
        assert store[j].image_id > 0
    assert stats.downloads == 3 and len(stats.evicted) == 1  # each part once

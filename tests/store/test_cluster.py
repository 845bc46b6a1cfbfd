"""Beyond one machine: the Dask backend, sources and stores on S3-compatible storage (rank
sharding is the sampler's: tests/train/test_nodes.py)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from sa1b_pack import open_store, pack
from sa1b_pack.read.verify import verify
from sa1b_pack.store.manifest import read_manifest

SHARDS = [0, 1, 2]


def test_dask_backend_packs_the_same_store(
    source_dir: Path, packed_dir: Path, tmp_path: Path, tools
):
    from dask.distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster),
    ):
        report = pack(source_dir, tmp_path / "store", SHARDS, backend="dask", progress=False)
    assert report.ok and sorted(report.packed) == [f"sa_{i:06d}" for i in SHARDS]
    assert tools.same_contents(read_manifest(tmp_path / "store")["shards"]) == tools.same_contents(
        read_manifest(packed_dir)["shards"]
    )


def test_dask_backend_without_a_cluster_says_how(source_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--scheduler"):
        pack(source_dir, tmp_path / "store", SHARDS, backend="dask", progress=False)


def test_pack_from_s3_compatible_storage(
    s3_endpoint: str, source_dir: Path, packed_dir: Path, tmp_path: Path, tools
) -> None:
    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=s3_endpoint, skip_instance_cache=True)
    fs.mkdir("sa1b")
    for i in SHARDS:
        fs.put(str(source_dir / f"sa_{i:06d}.tar"), f"sa1b/src/sa_{i:06d}.tar")
    assert os.environ["FSSPEC_S3_ENDPOINT_URL"] == s3_endpoint
    report = pack("s3://sa1b/src", tmp_path / "store", SHARDS, progress=False)
    assert report.ok
    assert tools.same_contents(read_manifest(tmp_path / "store")["shards"]) == tools.same_contents(
        read_manifest(packed_dir)["shards"]
    )
    with pytest.raises(FileNotFoundError, match=r"sa_000007\.tar"):
        pack("s3://sa1b/src", tmp_path / "other", [7], progress=False)


@pytest.mark.slow
def test_store_on_s3_compatible_storage(
    s3_endpoint: str, source_dir: Path, packed_dir: Path
) -> None:
    """Pack into s3://, read every sample back by byte ranges: equal to the local store."""
    import s3fs

    from sa1b_pack.train.recipe import Recipe, training_sample

    fs = s3fs.S3FileSystem(endpoint_url=s3_endpoint, skip_instance_cache=True)
    fs.mkdir("bucket")
    fs.pipe_file("bucket/store/parts/sa_000009-deadbeef/jpeg.bin", b"a crashed upload")
    report = pack(source_dir, "s3://bucket/store", SHARDS, progress=False)
    assert report.ok
    assert not fs.exists("bucket/store/parts/sa_000009-deadbeef"), "unlisted uploads dropped"
    generations = sorted(p.rsplit("/", 1)[-1] for p in fs.ls("bucket/store/manifests"))
    # empty; shard 1 in full (deltas may follow); shard 2 as a delta; shard 3 compacts
    # (as many deltas as shards listed); the run ends at rest: one new object each, none replaced
    kinds = [".json", ".json", ".delta.json", ".json", ".json"]
    assert generations == [f"{g:010d}{kind}" for g, kind in enumerate(kinds, 1)]
    local, far = open_store(packed_dir), open_store("s3://bucket/store")
    assert (
        type(far.storage).__name__ == "ObjectStorage"
        and len(far) == len(local)
        and far.shards == local.shards
    )
    before = far.storage.stats.requests
    for i in range(len(local)):
        a, b = local[i], far[i]
        assert (a.image_id, a.file_name, a.width, a.height) == (b.image_id, b.file_name,
                                                                b.width, b.height)  # fmt: skip
        for field in ("mask_ids", "bbox", "area", "predicted_iou", "stability_score", "crop_box"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
        np.testing.assert_array_equal(a.point_coords, b.point_coords)
        assert bytes(a.jpeg) == bytes(b.jpeg)
        assert [a.rle(j) for j in range(len(a))] == [b.rle(j) for j in range(len(b))]
        np.testing.assert_array_equal(a.masks(), b.masks())
    assert far.storage.stats.requests > before
    recipe = Recipe(image_size=64, mask_size=16, max_masks=3)
    ours, theirs = training_sample(local, 2, recipe), training_sample(far, 2, recipe)
    np.testing.assert_array_equal(ours["masks"], theirs["masks"])
    np.testing.assert_array_equal(ours["image"], theirs["image"])
    # resuming skips what the newest generation lists
    again = pack(source_dir, "s3://bucket/store", SHARDS, progress=False)
    assert again.packed == [] and len(again.skipped_existing) == len(SHARDS)
    # verify works remotely too: checksums and the round trip against the tars
    assert verify("s3://bucket/store", source=source_dir, progress=False) == []
    path = f"bucket/store/{read_manifest('s3://bucket/store')['shards']['sa_000001']['path']}"
    data = bytearray(fs.cat_file(f"{path}/counts.bin"))
    data[5] ^= 1
    fs.pipe_file(f"{path}/counts.bin", bytes(data))
    assert verify("s3://bucket/store", progress=False) == [
        "sa_000001: counts.bin: sha256 differs from the manifest (content changed)"
    ]

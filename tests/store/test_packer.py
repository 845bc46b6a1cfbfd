"""Packing: plain Parquet output, layout/order/gzip independence, bad data, kill and resume."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sa1b_pack import StoreError, open_store
from sa1b_pack.format.files import FORMAT_VERSION, PART_FILES
from sa1b_pack.source.identity import source_identity
from sa1b_pack.store.manifest import file_digest, read_manifest
from sa1b_pack.testing import synth
from sa1b_pack.write.packer import pack

REPO = Path(__file__).resolve().parents[2]
MEMBER_COLUMNS = ["jpeg_member", "json_member"]
NAMES = ["sa_000000", "sa_000001", "sa_000002"]


def part_tables(store: Path, name: str, kind: str) -> tuple[pa.Table, pa.Table]:
    """(Parquet table, Arrow IPC table) of one part, read with plain pyarrow."""
    folder = store / "parts" / name
    parquet = pq.read_table(folder / f"{kind}.parquet")
    with pa.memory_map(str(folder / f"{kind}.arrow")) as source:
        arrow = pa.ipc.open_file(source).read_all()
    return parquet, arrow


# --- Parquet / Arrow output ------------------------------------------------------------------


def test_parquet_one_row_per_image_and_mask(packed_dir: Path, source_images) -> None:
    manifest = read_manifest(packed_dir)
    assert list(manifest["shards"]) == NAMES
    for name in NAMES:
        src = [s for s in source_images if s.shard == name]
        images, images_arrow = part_tables(packed_dir, name, "images")
        anns, anns_arrow = part_tables(packed_dir, name, "annotations")
        assert images.num_rows == manifest["shards"][name]["images"] == len(src)
        assert anns.num_rows == manifest["shards"][name]["masks"]
        assert anns.num_rows == sum(len(s.doc["annotations"]) for s in src)
        assert images.equals(images_arrow) and anns.equals(anns_arrow)
        assert images.schema.metadata[b"format_version"] == str(FORMAT_VERSION).encode()
        assert images.column("image_id").to_pylist() == [s.image_id for s in src]
        assert images.column("file_name").to_pylist() == [s.doc["image"]["file_name"] for s in src]
        assert images.column("jpeg_member").to_pylist() == [s.jpeg_member for s in src]
        assert images.column("json_member").to_pylist() == [s.json_member for s in src]
        assert images.column("mask_count").to_pylist() == [len(s.doc["annotations"]) for s in src]
        flat = [(s.image_id, a) for s in src for a in s.doc["annotations"]]
        assert anns.column("image_id").to_pylist() == [i for i, _ in flat]
        for key in ("id", "area", "bbox", "predicted_iou", "stability_score", "crop_box"):
            assert anns.column(key).to_pylist() == [a[key] for _, a in flat], key
        assert anns.column("point_coords").to_pylist() == [a["point_coords"] for _, a in flat]
        assert anns.column("seg_height").to_pylist() == [
            a["segmentation"]["size"][0] for _, a in flat
        ]
        assert anns.column("seg_width").to_pylist() == [
            a["segmentation"]["size"][1] for _, a in flat
        ]
        counts = (packed_dir / "parts" / name / "counts.bin").read_bytes()
        offsets, sizes = anns.column("counts_offset").to_pylist(), anns.column("counts_size")
        strings = [counts[o : o + n] for o, n in zip(offsets, sizes.to_pylist(), strict=True)]
        assert strings == [a["segmentation"]["counts"].encode() for _, a in flat]
        assert images.column("extra").null_count == images.num_rows


def test_manifest_entries_match_files(packed_dir: Path, source_dir: Path) -> None:
    manifest = read_manifest(packed_dir)
    assert manifest["format_version"] == FORMAT_VERSION
    for name, entry in manifest["shards"].items():
        folder = packed_dir / "parts" / name
        assert sorted(p.name for p in folder.iterdir()) == sorted(PART_FILES)
        assert entry["files"] == {f: file_digest(folder / f) for f in PART_FILES}
        tar = source_dir / f"{name}.tar"
        assert entry["source"] == {"file": tar.name, **source_identity(tar)}
        assert entry["source"]["mtime"] == tar.stat().st_mtime
        assert entry["skipped_members"] == []
    assert sorted(p.name for p in (packed_dir / "parts").iterdir()) == NAMES


# --- Same content from every layout, member order and compression -----------------------------

VARIANTS = {
    "root": {"layout": "root"},
    "dot": {"layout": "dot"},
    "folder": {"layout": "folder"},
    "gzip": {"layout": "root", "gzip": True},
    "folder-gzip": {"layout": "folder", "gzip": True},
    "unshuffled": {"layout": "root", "shuffle": False},
}


@pytest.fixture(scope="module")
def variants(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """variant -> (source folder, packed store) of the same two shards."""
    out = {}
    for key, options in VARIANTS.items():
        root = tmp_path_factory.mktemp(f"variant-{key}")
        synth.synth_shards(root / "src", [0, 1], 5, small=True, seed=11, progress=False, **options)
        report = pack(root / "src", root / "dst", [0, 1], progress=False)
        assert report.ok and report.packed == NAMES[:2] and not report.skipped_members
        out[key] = (root / "src", root / "dst")
    return out


def content(store: Path) -> dict:
    """Everything in a store except member names and source file sizes."""
    manifest = read_manifest(store)
    out = {}
    for name, entry in manifest["shards"].items():
        images, _ = part_tables(store, name, "images")
        anns, _ = part_tables(store, name, "annotations")
        out[name] = {
            "images": images.drop_columns(MEMBER_COLUMNS),
            "annotations": anns,
            "counts": [entry[k] for k in ("images", "masks", "jpeg_bytes", "counts_bytes")],
            "payloads": {f: entry["files"][f] for f in ("jpeg.bin", "counts.bin")},
        }
    return out


def differing_columns(a: pa.Table, b: pa.Table) -> list[str]:
    assert a.schema == b.schema
    return [c for c in a.column_names if not a.column(c).equals(b.column(c))]


def assert_same_content(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        for table in ("images", "annotations"):
            assert differing_columns(a[name][table], b[name][table]) == [], (name, table)
        assert a[name]["counts"] == b[name]["counts"], name
        assert a[name]["payloads"] == b[name]["payloads"], name


@pytest.mark.parametrize("key", ["dot", "folder", "gzip", "folder-gzip"])
def test_layouts_and_gzip_pack_the_same(variants, key: str) -> None:
    src, dst = variants[key]
    if "gzip" in key:
        assert (src / "sa_000000.tar").read_bytes()[:2] == b"\x1f\x8b"
    assert_same_content(content(variants["root"][1]), content(dst))
    prefix = {"dot": "./", "folder": "sa_000001/", "gzip": "", "folder-gzip": "sa_000001/"}[key]
    images, _ = part_tables(dst, "sa_000001", "images")
    ids = images.column("image_id").to_pylist()
    assert images.column("jpeg_member").to_pylist() == [f"{prefix}sa_{i}.jpg" for i in ids]
    assert images.column("json_member").to_pylist() == [f"{prefix}sa_{i}.json" for i in ids]


def test_member_order_does_not_change_the_samples(variants) -> None:
    shuffled, ordered = open_store(variants["root"][1]), open_store(variants["unshuffled"][1])
    assert len(shuffled) == len(ordered) == 10
    for a, b in zip(shuffled, ordered, strict=True):
        assert (a.shard, a.image_id) == (b.shard, b.image_id)
        assert bytes(a.jpeg) == bytes(b.jpeg)
        assert [a.rle(j) for j in range(len(a))] == [b.rle(j) for j in range(len(b))]


def test_member_order_changes_only_payload_offsets(variants) -> None:
    """Payloads are written in one pass, in tar order: only offsets (and checksums) may differ."""
    shuffled, ordered = content(variants["root"][1]), content(variants["unshuffled"][1])
    for name in shuffled:
        a, b = shuffled[name], ordered[name]
        assert differing_columns(a["images"], b["images"]) == ["jpeg_offset"]
        assert differing_columns(a["annotations"], b["annotations"]) == ["counts_offset"]
        assert a["counts"] == b["counts"]
        sizes = [{f: d["bytes"] for f, d in x["payloads"].items()} for x in (a, b)]
        assert sizes[0] == sizes[1]


# --- Bad data fails its own shard only ---------------------------------------------------------


@pytest.fixture(scope="module")
def bad_source(tmp_path_factory: pytest.TempPathFactory, tools) -> Path:
    src = tmp_path_factory.mktemp("bad") / "src"

    def doc_of(image_id: int, seed: int) -> tuple[bytes, dict]:
        return tools.sample_pair(image_id, seed)

    # 0: good, with strays, a JPEG without its JSON and a JSON without its JPEG.
    jpeg3, _ = doc_of(3, 3)
    _, doc8 = doc_of(8, 8)
    tools.write_tar(
        src / "sa_000000.tar",
        [
            ("README.txt", b"read me"),
            *tools.sample_members(1, 1),
            ("._sa_1.jpg", b"\x00\x05\x16\x07"),
            ("sa_3.jpg", jpeg3),
            ("sa_1.txt", b"x"),
            *tools.sample_members(2, 2)[::-1],
            ("other/sa_1.jpg", b"x"),
            ("sa_8.json", orjson.dumps(doc8)),
        ],
    )
    # 1: a malformed counts string.
    jpeg, doc = doc_of(100_001, 4)
    doc["annotations"][1]["segmentation"]["counts"] += "!"
    tools.write_tar(
        src / "sa_000001.tar",
        [
            *tools.sample_members(100_000, 5),
            ("sa_100001.jpg", jpeg),
            ("sa_100001.json", orjson.dumps(doc)),
        ],
    )
    # 2: width in the JSON disagrees with the JPEG header.
    jpeg, doc = doc_of(200_001, 6)
    image = doc["image"]
    wrong = tools.tiny_jpeg(image["height"], image["width"] + 1)
    tools.write_tar(
        src / "sa_000002.tar",
        [
            ("sa_200001.json", orjson.dumps(doc)),
            *tools.sample_members(200_002, 7),
            ("sa_200001.jpg", wrong),
        ],
    )
    # 3: a .jpg that is not a JPEG.
    tools.write_tar(
        src / "sa_000003.tar",
        [*tools.sample_members(300_001, 8)[::-1], ("sa_300002.jpg", b"\x89PNG\r\n\x1a\n" * 50)],
    )
    # 4: a member name that disagrees with image.image_id; 5: the same image twice.
    jpeg, doc = doc_of(400_001, 9)
    tools.write_tar(
        src / "sa_000004.tar", [("sa_400002.jpg", jpeg), ("sa_400002.json", orjson.dumps(doc))]
    )
    tools.write_tar(
        src / "sa_000005.tar",
        [*tools.sample_members(500_001, 10), ("sa_000005/sa_500001.jpg", jpeg)],
    )
    return src


BAD = {
    "sa_000001": ("sa_100001.json", "counts"),
    "sa_000002": ("sa_200001.json", "sa_200001.jpg"),
    "sa_000003": ("sa_300002.jpg", "JPEG"),
    "sa_000004": ("sa_400002.json", "image_id"),
    "sa_000005": ("sa_000005/sa_500001.jpg", "duplicate"),
}


@pytest.fixture(scope="module")
def bad_pack(bad_source: Path, tmp_path_factory: pytest.TempPathFactory):
    dst = tmp_path_factory.mktemp("bad-store") / "store"
    return pack(bad_source, dst, list(range(6)), progress=False), dst


def test_bad_shards_fail_alone(bad_pack) -> None:
    report, dst = bad_pack
    assert not report.ok
    assert report.packed == ["sa_000000"]
    assert sorted(report.failed) == sorted(BAD)
    for name, (member, hint) in BAD.items():
        message = report.failed[name]
        assert f"{name}.tar" in message and member in message and hint in message, message
    assert sorted(p.name for p in (dst / "parts").iterdir()) == ["sa_000000"]
    manifest = read_manifest(dst)
    assert list(manifest["shards"]) == ["sa_000000"]
    store = open_store(dst)
    assert [s.image_id for s in store] == [1, 2]
    assert report.images == 2 and report.masks == len(store[0]) + len(store[1])


def test_strays_and_orphans_are_reported_not_packed(bad_pack) -> None:
    report, dst = bad_pack
    expected = ["README.txt", "._sa_1.jpg", "sa_3.jpg", "sa_1.txt", "other/sa_1.jpg", "sa_8.json"]
    skipped = report.skipped_members["sa_000000"]
    assert sorted(m for m, _ in skipped) == sorted(expected)
    assert all(isinstance(reason, str) and reason for _, reason in skipped)
    reasons = dict(skipped)
    assert "JSON" in reasons["sa_3.jpg"] and "JPEG" in reasons["sa_8.json"]
    entry = read_manifest(dst)["shards"]["sa_000000"]
    assert [tuple(s) for s in entry["skipped_members"]] == [tuple(s) for s in skipped]
    assert open_store(dst).info()["skipped_members"] == len(expected)


def test_failed_shard_is_retried_by_the_next_run(bad_pack, bad_source: Path, tmp_path) -> None:
    _, dst = bad_pack
    copy = tmp_path / "store"
    shutil.copytree(dst, copy)
    report = pack(bad_source, copy, [0, 1], progress=False)
    assert report.skipped_existing == ["sa_000000"] and list(report.failed) == ["sa_000001"]
    assert report.packed == []


def test_out_of_range_integers_fail_their_shard_only(tmp_path: Path, tools) -> None:
    """Valid JSON, but an id or image_id beyond int64: a failed shard, not a crashed run."""
    src = tmp_path / "src"
    tools.write_tar(src / "sa_000000.tar", tools.sample_members(1))
    jpeg, doc = tools.sample_pair(100_001, seed=2)
    doc["annotations"][0]["id"] = 2**63
    tools.write_tar(
        src / "sa_000001.tar", [("sa_100001.jpg", jpeg), ("sa_100001.json", orjson.dumps(doc))]
    )
    big = 2**63 + 5
    jpeg, doc = tools.sample_pair(big, seed=3)
    tools.write_tar(
        src / "sa_000002.tar", [(f"sa_{big}.jpg", jpeg), (f"sa_{big}.json", orjson.dumps(doc))]
    )
    report = pack(src, tmp_path / "dst", [0, 1, 2], progress=False)
    assert report.packed == ["sa_000000"] and not report.ok
    assert sorted(report.failed) == ["sa_000001", "sa_000002"]
    assert "sa_100001.json" in report.failed["sa_000001"]
    assert f"sa_{big}.json" in report.failed["sa_000002"]
    assert sorted(p.name for p in (tmp_path / "dst" / "parts").iterdir()) == ["sa_000000"]


def test_shard_without_a_complete_image(tmp_path: Path, tools) -> None:
    """Only strays and an orphan JPEG: an empty part, its members reported; the rest packs."""
    src = tmp_path / "src"
    jpeg, _ = tools.sample_pair(7)
    tools.write_tar(src / "sa_000000.tar", [("README.txt", b"hello"), ("sa_7.jpg", jpeg)])
    tools.write_tar(src / "sa_000001.tar", tools.sample_members(100_001, seed=1))
    report = pack(src, tmp_path / "dst", [0, 1], progress=False)
    assert report.ok and report.packed == ["sa_000000", "sa_000001"]
    assert [m for m, _ in report.skipped_members["sa_000000"]] == ["README.txt", "sa_7.jpg"]
    entry = read_manifest(tmp_path / "dst")["shards"]["sa_000000"]
    assert entry["images"] == entry["masks"] == 0 and len(entry["skipped_members"]) == 2
    store = open_store(tmp_path / "dst")
    assert len(store) == 1 and store[0].image_id == 100_001 and store[0].shard == "sa_000001"


def test_parallel_pack_equals_serial(packed_dir: Path, source_dir: Path, tmp_path: Path) -> None:
    report = pack(source_dir, tmp_path / "dst", [0, 1, 2], jobs=2, progress=True)
    assert report.ok and sorted(report.packed) == NAMES
    assert read_manifest(tmp_path / "dst") == read_manifest(packed_dir)


# --- Resume, leftovers, kill --------------------------------------------------------------------


def snapshot(store: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(store)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(store.rglob("*"))
        if p.is_file() and p.name != ".pack.lock"
    }


def test_resume_changes_nothing(packed_dir: Path, source_dir: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    shutil.copytree(packed_dir, store)
    before, manifest = snapshot(store), (store / "manifest.json").read_bytes()
    report = pack(source_dir, store, [0, 1, 2], progress=False)
    assert report.ok and report.packed == [] and report.skipped_existing == NAMES
    assert report.images == report.masks == 0
    assert (store / "manifest.json").read_bytes() == manifest
    assert snapshot(store) == before


def test_leftovers_are_removed(packed_dir: Path, source_dir: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    shutil.copytree(packed_dir, store)
    manifest = (store / "manifest.json").read_bytes()
    for leftover in ("parts/.tmp-sa_000001-0badcafe", "parts/sa_000009"):
        (store / leftover).mkdir()
        (store / leftover / "jpeg.bin").write_bytes(b"partial")
    report = pack(source_dir, store, [0, 1, 2], progress=False)
    assert report.ok and report.skipped_existing == NAMES
    assert sorted(p.name for p in (store / "parts").iterdir()) == NAMES
    assert (store / "manifest.json").read_bytes() == manifest


def test_unlisted_part_of_a_wanted_shard_is_repacked(
    packed_dir: Path, source_dir: Path, tmp_path: Path
) -> None:
    """A part renamed into place but never listed (killed before the manifest) is redone."""
    store = tmp_path / "store"
    shutil.copytree(packed_dir, store)
    manifest = read_manifest(store)
    entry = manifest["shards"].pop("sa_000002")
    (store / "manifest.json").write_bytes(orjson.dumps(manifest))
    (store / "parts/sa_000002/counts.bin").write_bytes(b"garbage")
    report = pack(source_dir, store, [0, 1, 2], progress=False)
    assert report.packed == ["sa_000002"] and report.skipped_existing == NAMES[:2]
    assert read_manifest(store)["shards"]["sa_000002"] == entry


def test_listed_shard_with_damaged_files_is_refused(
    packed_dir: Path, source_dir: Path, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    shutil.copytree(packed_dir, store)
    (store / "parts/sa_000001/jpeg.bin").unlink()
    with pytest.raises(StoreError, match="sa_000001"):
        pack(source_dir, store, [0, 1, 2], progress=False)


KILL_SHARDS = 4
KILL_IMAGES = 2000
KILL_AT = f"member@{KILL_IMAGES * 3}"  # 2 members an image: half way through the second shard


@pytest.fixture(scope="module")
def big_source(tmp_path_factory: pytest.TempPathFactory, tools) -> Path:
    """Four shards of many small images, fast to write: 24 synthetic samples re-used."""
    src = tmp_path_factory.mktemp("big") / "src"
    src.mkdir()
    base = [tools.sample_pair(1, seed) for seed in range(24)]
    for s in range(KILL_SHARDS):
        with tarfile.open(src / f"sa_{s:06d}.tar", "w", format=tarfile.GNU_FORMAT) as tar:
            for k in range(KILL_IMAGES):
                jpeg, doc = base[(k * 7 + s) % len(base)]
                image_id = s * 100_000 + 3 * k + 1
                image = {**doc["image"], "image_id": image_id, "file_name": f"sa_{image_id}.jpg"}
                raw = orjson.dumps({**doc, "image": image})
                for name, data in ((f"sa_{image_id}.json", raw), (f"sa_{image_id}.jpg", jpeg)):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return src


def run_cli_pack(src: Path, dst: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "SA1B_PACK_CRASH_AT": KILL_AT}
    command = [sys.executable, "-m", "sa1b_pack", "pack", str(src), str(dst)]
    command += ["--shards", f"0-{KILL_SHARDS - 1}", "--jobs", "1", "--quiet"]
    return subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


@pytest.mark.slow
def test_kill_mid_run_then_resume(big_source: Path, tmp_path: Path) -> None:
    dst = tmp_path / "killed"
    proc = run_cli_pack(big_source, dst)  # SIGKILLs itself mid-way through the second shard
    try:
        _, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL, err.decode()
    listed = read_manifest(dst)["shards"]
    assert sorted(listed) == ["sa_000000"], "the first shard committed, the second not"

    # The store holds exactly the committed shards, each intact.
    store = open_store(dst)
    assert store.shards == sorted(listed)
    assert len(store) == KILL_IMAGES * len(listed)
    for name, entry in listed.items():
        for f, digest in entry["files"].items():
            assert file_digest(dst / "parts" / name / f) == digest, (name, f)
    assert store[len(store) - 1].masks().shape[0] == len(store[len(store) - 1])

    # Re-running finishes the job and drops the killed run's leftovers.
    report = pack(big_source, dst, list(range(KILL_SHARDS)), progress=False)
    assert report.ok and sorted(report.skipped_existing) == sorted(listed)
    assert sorted(report.packed + report.skipped_existing) == [
        f"sa_{i:06d}" for i in range(KILL_SHARDS)
    ]
    names = sorted(p.name for p in (dst / "parts").iterdir())
    assert names == [f"sa_{i:06d}" for i in range(KILL_SHARDS)]

    clean = tmp_path / "clean"
    assert pack(big_source, clean, list(range(KILL_SHARDS)), progress=False).ok
    assert read_manifest(dst)["shards"] == read_manifest(clean)["shards"]
    assert len(open_store(dst)) == KILL_SHARDS * KILL_IMAGES
    assert np.array_equal(open_store(dst)[-1].masks(), open_store(clean)[-1].masks())

"""verify finds every kind of damage; the reader turns damage into clear errors, not garbage."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import orjson
import pytest

from sa1b_pack import StoreError, open_store
from sa1b_pack.cli import main
from sa1b_pack.format.files import PART_FILES
from sa1b_pack.read.verify import verify
from tests.conftest import write_tar

NAME = "sa_000001"


@pytest.fixture
def store(packed_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "store"
    shutil.copytree(packed_dir, copy)
    return copy


def flip(path: Path, where: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * where)] ^= 0x40
    path.write_bytes(bytes(data))


def test_a_good_store_verifies(packed_dir: Path, source_dir: Path) -> None:
    assert verify(packed_dir, progress=False) == []
    assert verify(packed_dir, source=source_dir, progress=False, jobs=2) == []
    assert verify(packed_dir, source=source_dir, sample=0.3, progress=False) == []


@pytest.mark.parametrize("name", [f for f in PART_FILES if f != "resized.bin"])
def test_a_flipped_byte_anywhere_is_found(store: Path, name: str) -> None:
    flip(store / "parts" / NAME / name)
    problems = verify(store, progress=False)
    assert problems == [f"{NAME}: {name}: sha256 differs from the manifest (content changed)"]


def test_missing_and_truncated_files_are_found(store: Path) -> None:
    (store / "parts" / NAME / "counts.bin").unlink()
    jpeg = store / "parts" / "sa_000002" / "jpeg.bin"
    jpeg.write_bytes(jpeg.read_bytes()[:-10])
    problems = verify(store, progress=False)
    assert f"{NAME}: counts.bin: missing" in problems
    assert any(p.startswith("sa_000002: jpeg.bin: ") and "the manifest says" in p for p in problems)


def test_manifest_counts_that_disagree_with_the_tables(store: Path) -> None:
    manifest = orjson.loads((store / "manifest.json").read_bytes())
    manifest["shards"][NAME]["masks"] += 1
    (store / "manifest.json").write_bytes(orjson.dumps(manifest))
    problems = verify(store, progress=False)
    assert problems and all(p.startswith(NAME) for p in problems)
    assert "rows disagree with the manifest" in problems[0]


def test_source_round_trip_finds_a_changed_source(
    packed_dir: Path, source_images, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    changed = None
    for index in (0, 1, 2):
        members = []
        for image in (s for s in source_images if s.shard == f"sa_{index:06d}"):
            doc = image.doc
            if index == 1 and changed is None and doc["annotations"]:
                doc = orjson.loads(orjson.dumps(doc))
                doc["annotations"][0]["predicted_iou"] += 1e-9
                changed = image.json_member
            members += [(image.jpeg_member, image.jpeg), (image.json_member, orjson.dumps(doc))]
        write_tar(src / f"sa_{index:06d}.tar", members)
    problems = verify(packed_dir, source=src, progress=False)
    assert problems == [f"{NAME}: {changed}: annotations differ from the store"]


def test_cli_exit_status(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", str(store), "--quiet"]) == 0
    flip(store / "parts" / NAME / "images.parquet")
    assert main(["verify", str(store), "--quiet"]) == 1
    out = capsys.readouterr().out
    assert f"{NAME}: images.parquet: sha256 differs" in out


def test_reader_on_truncated_payloads_and_tables(store: Path) -> None:
    counts = store / "parts" / NAME / "counts.bin"
    counts.write_bytes(counts.read_bytes()[:-1])
    s = open_store(store)
    first = s.shards.index(NAME)
    index = int(s._spanner.starts[first])
    with pytest.raises(StoreError, match=r"counts\.bin has .* bytes, the manifest says"):
        s[index]
    table = store / "parts" / "sa_000002" / "annotations.arrow"
    table.write_bytes(table.read_bytes()[: table.stat().st_size // 2])
    with pytest.raises(StoreError, match=r"annotations\.arrow"):
        s[len(s) - 1]


def test_reader_never_returns_garbage_masks_from_corrupt_strings(
    packed_dir: Path, tmp_path: Path
) -> None:
    """Random single-byte flips in counts.bin: masks come back identical or as StoreError."""
    rng = np.random.default_rng(0)
    truth = {i: s.masks() for i, s in enumerate(open_store(packed_dir))}
    caught = 0
    for trial in range(25):
        store = tmp_path / f"s{trial}"
        shutil.copytree(packed_dir, store)
        for part in (store / "parts").iterdir():
            flip(part / "counts.bin", rng.random())
        opened = open_store(store)
        for i, expected in truth.items():
            try:
                got = opened[i].masks()
            except StoreError as exc:
                assert "corrupt store" in str(exc)
                caught += 1
                continue
            np.testing.assert_array_equal(got, expected)
        shutil.rmtree(store)
    assert caught >= 25


def test_invalid_arrow_data_that_opens_is_found_by_verify(store: Path) -> None:
    """A file name that is not UTF-8, committed with matching checksums: the reader's cheap
    open checks let it through (it cannot crash a read), verify's full check names it."""
    import pyarrow as pa

    from sa1b_pack.store.manifest import file_digest, read_manifest, write_manifest

    path = store / "parts" / NAME / "images.arrow"
    table = pa.ipc.open_file(pa.BufferReader(path.read_bytes())).read_all().combine_chunks()
    names = table.column("file_name").chunk(0)
    data = bytearray(names.buffers()[2].to_pybytes())
    data[0] = 0xFF  # never valid in UTF-8
    bad = pa.Array.from_buffers(pa.string(), len(names),
                                [None, names.buffers()[1], pa.py_buffer(bytes(data))])  # fmt: skip
    table = table.set_column(table.schema.get_field_index("file_name"), "file_name", bad)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    manifest = read_manifest(store)
    manifest["shards"][NAME]["files"]["images.arrow"] = file_digest(path)
    write_manifest(store, manifest)
    assert open_store(store)[open_store(store).part_start(1)].image_id > 0  # opens, reads
    problems = verify(store, progress=False)
    assert any(p.startswith(f"{NAME}: images.arrow: invalid Arrow data") for p in problems)


def coco_rle(seg: dict) -> dict:
    """pycocotools' RLE of a segmentation, its counts compressed as pycocotools does."""
    from pycocotools import mask as coco

    if isinstance(seg["counts"], list):
        return coco.frPyObjects(seg, *seg["size"])
    return {"size": seg["size"], "counts": seg["counts"].encode()}


def test_uncompressed_rle_and_warnings_round_trip(
    tmp_path: Path, tools, capsys: pytest.CaptureFixture[str]
) -> None:
    """A shard with uncompressed RLE counts (every other mask, zero-length first runs too) and
    one doubtful area: packed, counted, warned; every document() equals the source JSON and
    verify --source passes."""
    from pycocotools import mask as coco

    from sa1b_pack.codec.rle import string_to_runs
    from sa1b_pack.write.packer import pack

    docs, members = {}, []
    for image_id in (5, 6, 8):
        jpeg, doc = tools.sample_pair(image_id, seed=image_id)
        for ann in doc["annotations"][::2]:
            seg = ann["segmentation"]
            seg["counts"] = string_to_runs(seg["counts"], *seg["size"]).tolist()
        if image_id == 6:
            doc["annotations"][0]["segmentation"]["counts"][:0] = [0, 0]
            doc["annotations"][1]["area"] += 1
        docs[image_id] = doc
        members += [(f"sa_{image_id}.json", orjson.dumps(doc)), (f"sa_{image_id}.jpg", jpeg)]
    write_tar(tmp_path / "src" / "sa_000000.tar", members)
    report = pack(tmp_path / "src", tmp_path / "dst", [0], progress=False)
    assert report.ok
    converted = sum(len(d["annotations"][::2]) for d in docs.values())
    ann = docs[6]["annotations"][1]
    warning = f"annotations[1] (id {ann['id']}): area {ann['area']} disagrees with its mask's "
    assert [(m, w[: len(warning)]) for m, w in report.warnings["sa_000000"]] == [
        ("sa_6.json", warning)
    ]
    entry = orjson.loads((tmp_path / "dst" / "manifest.json").read_bytes())["shards"]["sa_000000"]
    assert entry["converted"] == {"uncompressed_rle": converted}
    assert entry["warnings"] == [list(w) for w in report.warnings["sa_000000"]]

    store = open_store(tmp_path / "dst")
    for s in store:
        doc = docs[s.image_id]
        assert s.document() == doc
        rles = [coco_rle(a["segmentation"]) for a in doc["annotations"]]
        assert [s.rle(j)["counts"].encode() for j in range(len(s))] == [r["counts"] for r in rles]
        expected = coco.decode(rles).transpose(2, 0, 1) if rles else s.masks()
        np.testing.assert_array_equal(s.masks(), expected)
    assert verify(tmp_path / "dst", source=tmp_path / "src", progress=False) == []
    assert [(e["kind"], e["member"]) for e in store.errors()] == [("warning", "sa_6.json")]
    assert main(["errors", str(tmp_path / "dst")]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("sa_000000\twarning\tsa_6.json\tannotations[1]")
    assert "0 problems recorded, 1 warnings" in err

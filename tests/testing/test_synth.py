"""The synthetic shards must look like released SA-1B shards, reproducibly."""

from __future__ import annotations

import re
import tarfile
from pathlib import Path

import numpy as np
import orjson
import pytest
import simplejpeg
from pycocotools import mask as mask_util

from sa1b_pack.testing import synth

# pycocotools 2.0.11 decode under numpy 2 warns about its own __array__; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
IMAGES = 12
ANN_KEYS = {
    "id",
    "segmentation",
    "area",
    "bbox",
    "predicted_iou",
    "stability_score",
    "point_coords",
    "crop_box",
}
ASPECTS = {(2, 3), (3, 2), (3, 4), (4, 3), (1, 1)}  # width : height


def read_members(path: Path) -> list[tuple[str, bytes | None]]:
    """(name, data) in tar order; data is None for directories."""
    with tarfile.open(path, "r:*") as tar:
        return [
            (m.name, tar.extractfile(m).read() if m.isfile() else None) for m in tar.getmembers()
        ]


def samples(members: list[tuple[str, bytes | None]]) -> dict[str, dict[str, bytes]]:
    """Pair members by basename stem across the whole tar: {"sa_N": {"jpg": .., "json": ..}}."""
    out: dict[str, dict[str, bytes]] = {}
    for name, data in members:
        if data is not None:
            stem, ext = name.rsplit("/", 1)[-1].rsplit(".", 1)
            out.setdefault(stem, {})[ext] = data
    return out


def decode(ann: dict) -> np.ndarray:
    seg = ann["segmentation"]
    return mask_util.decode({"size": seg["size"], "counts": seg["counts"].encode()})


@pytest.fixture(scope="module")
def shard(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synth.synth_shard(tmp_path_factory.mktemp("shard"), 0, IMAGES, small=True, seed=7)


@pytest.fixture(scope="module")
def records(shard: Path) -> list[tuple[bytes, dict]]:
    pairs = samples(read_members(shard))
    return [(p["jpg"], orjson.loads(p["json"])) for p in pairs.values()]


@pytest.mark.parametrize("layout", ["root", "dot", "folder"])
def test_member_names_per_layout(tmp_path: Path, layout: str) -> None:
    path = synth.synth_shard(tmp_path, 3, 4, small=True, layout=layout)
    assert path == tmp_path / "sa_000003.tar"
    names = [name for name, _ in read_members(path)]
    prefix = {"root": "", "dot": "./", "folder": "sa_000003/"}[layout]
    if layout == "folder":
        with tarfile.open(path) as tar:
            assert tar.getmembers()[0].isdir() and tar.getmembers()[0].name == "sa_000003"
        names = names[1:]
    assert len(names) == 8
    for name in names:
        match = re.fullmatch(re.escape(prefix) + r"sa_(\d+)\.(jpg|json)", name)
        assert match, name
        assert 300_000 < int(match[1]) < 400_000


def test_every_jpg_has_its_json_and_order_is_shuffled(shard: Path) -> None:
    members = read_members(shard)
    pairs = samples(members)
    assert len(members) == 2 * IMAGES and len(pairs) == IMAGES
    assert all(set(p) == {"jpg", "json"} for p in pairs.values())
    ids = sorted(int(stem[3:]) for stem in pairs)
    assert len(set(np.diff(ids).tolist())) > 1, "ids should have random gaps"
    stems = [name.rsplit(".", 1)[0] for name, _ in members]
    positions = {s: [i for i, t in enumerate(stems) if t == s] for s in pairs}
    assert any(b - a > 1 for a, b in positions.values()), "some pair must be non-adjacent"


def test_unshuffled_order_is_adjacent(tmp_path: Path) -> None:
    names = [
        n for n, _ in read_members(synth.synth_shard(tmp_path, 0, 3, small=True, shuffle=False))
    ]
    assert [n.rsplit(".", 1)[0] for n in names[::2]] == [n.rsplit(".", 1)[0] for n in names[1::2]]


def test_gzip_keeps_tar_name_and_opens_by_magic(tmp_path: Path, shard: Path) -> None:
    path = synth.synth_shard(tmp_path, 0, IMAGES, small=True, seed=7, gzip=True)
    assert path.name == "sa_000000.tar"
    assert path.read_bytes()[:2] == b"\x1f\x8b"
    assert read_members(path) == read_members(shard)


def test_deterministic_and_atomic(tmp_path: Path, shard: Path) -> None:
    again = synth.synth_shard(tmp_path / "a", 0, IMAGES, small=True, seed=7)
    assert again.read_bytes() == shard.read_bytes()
    gz = [synth.synth_shard(tmp_path / d, 5, 3, small=True, gzip=True) for d in "bc"]
    assert gz[0].read_bytes() == gz[1].read_bytes()
    other = synth.synth_shard(tmp_path / "d", 0, IMAGES, small=True, seed=8)
    assert other.read_bytes() != shard.read_bytes()
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["sa_000000.tar"]


def test_interrupted_synth_leaves_no_tar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real, calls = synth.synth_sample, []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(synth, "synth_sample", failing)
    with pytest.raises(KeyboardInterrupt):
        synth.synth_shard(tmp_path, 0, 3, small=True)
    assert list(tmp_path.iterdir()) == []


def test_json_keys_and_types(records: list[tuple[bytes, dict]]) -> None:
    for _, rec in records:
        assert set(rec) == {"image", "annotations"}
        image = rec["image"]
        assert set(image) == {"image_id", "width", "height", "file_name"}
        assert all(type(image[k]) is int for k in ("image_id", "width", "height"))
        assert image["file_name"] == f"sa_{image['image_id']}.jpg"
        ids = [a["id"] for a in rec["annotations"]]
        assert len(set(ids)) == len(ids)
        for ann in rec["annotations"]:
            assert set(ann) == ANN_KEYS and type(ann["id"]) is int
            assert set(ann["segmentation"]) == {"size", "counts"}
            assert ann["segmentation"]["size"] == [image["height"], image["width"]]
            assert type(ann["segmentation"]["counts"]) is str and type(ann["area"]) is int
            assert len(ann["bbox"]) == 4 and all(type(v) is float for v in ann["bbox"])
            assert len(ann["crop_box"]) == 4 and all(type(v) is float for v in ann["crop_box"])
            assert [len(p) for p in ann["point_coords"]] == [2]
            assert all(type(v) is float for v in ann["point_coords"][0])
            assert 0.5 < ann["predicted_iou"] < 1.03 and type(ann["predicted_iou"]) is float
            assert 0.85 <= ann["stability_score"] <= 1.0
    anns = [a for _, rec in records for a in rec["annotations"]]
    assert any(a["predicted_iou"] > 1.0 for a in anns)
    assert any(np.diff(sorted(a["id"] for a in rec["annotations"])).max() > 1 for _, rec in records)


def test_rle_area_bbox_and_jpeg(records: list[tuple[bytes, dict]]) -> None:
    quirks = exact = 0
    for jpeg, rec in records:
        h, w = rec["image"]["height"], rec["image"]["width"]
        assert simplejpeg.decode_jpeg(jpeg).shape == (h, w, 3)
        assert 96 <= min(h, w) <= 160
        assert any(abs(w * b - h * a) <= b for a, b in ASPECTS), (w, h)
        for ann in rec["annotations"]:
            m = decode(ann)
            rle = {"size": [h, w], "counts": ann["segmentation"]["counts"].encode()}
            assert m.shape == (h, w)
            assert ann["area"] == int(mask_util.area(rle)) == int(m.sum()) > 0
            box = mask_util.toBbox(rle).tolist()
            smaller = [box[0], box[1], box[2] - 1, box[3] - 1]
            assert ann["bbox"] in (box, smaller)
            exact += ann["bbox"] == box
            quirks += ann["bbox"] == smaller
    assert quirks > 0 and exact > quirks


def test_masks_overlap_nest_and_vary(records: list[tuple[bytes, dict]]) -> None:
    counts = [len(rec["annotations"]) for _, rec in records]
    assert counts.count(0) == 1 and all(5 <= c <= 20 for c in counts if c)
    nested = overlapping = border = thin = 0
    for _, rec in records:
        masks = [decode(a).astype(bool) for a in rec["annotations"]]
        for m in masks:
            border += bool(m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any())
            ys, xs = np.nonzero(m)
            thin += ys.min() == ys.max() or xs.min() == xs.max()
        for i, a in enumerate(masks):
            for b in masks[i + 1 :]:
                inter = np.count_nonzero(a & b)
                small = min(a.sum(), b.sum())
                nested += inter == small and a.sum() != b.sum()
                overlapping += 0 < inter < small
    assert nested and overlapping and border and thin


def test_full_size_sample() -> None:
    jpeg, rec = synth.synth_sample(np.random.default_rng(1), 42, small=False)
    h, w = rec["image"]["height"], rec["image"]["width"]
    assert min(h, w) == synth.FULL_SHORT_SIDE
    assert any(w * b == h * a for a, b in ASPECTS)
    assert simplejpeg.decode_jpeg_header(jpeg)[:2] == (h, w)
    assert 300_000 < len(jpeg) < 2_000_000
    assert 20 <= len(rec["annotations"]) <= 600
    ann = rec["annotations"][0]
    assert ann["area"] == int(decode(ann).sum())


def test_synth_shards_in_parallel_matches_serial(tmp_path: Path) -> None:
    kw = {"small": True, "seed": 3, "progress": False}
    serial = synth.synth_shards(tmp_path / "s", [2, 0], 2, jobs=1, **kw)
    parallel = synth.synth_shards(tmp_path / "p", [2, 0], 2, jobs=2, **kw)
    assert [p.name for p in parallel] == ["sa_000002.tar", "sa_000000.tar"]
    assert [p.read_bytes() for p in serial] == [p.read_bytes() for p in parallel]
    with pytest.raises(ValueError):
        synth.synth_shards(tmp_path, [1, 1], 1, progress=False)


def test_full_size_jpegs_are_encoded_like_the_released_ones() -> None:
    """Quality 95 (the released luma table starts 2, 1, 1, 2) and 4:2:0 chroma, so that bytes
    per image, read I/O and decode cost mean what they would on real SA-1B."""
    jpeg, _ = synth.synth_sample(np.random.default_rng(0), 7, small=False, n_masks=20)
    _, _, _, subsampling = simplejpeg.decode_jpeg_header(jpeg)
    assert subsampling == "420"
    dqt = jpeg.index(b"\xff\xdb")  # first quantisation table: luma, 8-bit, in zigzag order
    table = jpeg[dqt + 5 : dqt + 5 + 64]
    first_row = [table[z] for z in (0, 1, 5, 6)]  # zigzag positions of row 0, columns 0-3
    assert jpeg[dqt + 4] == 0 and first_row == [2, 1, 1, 2]

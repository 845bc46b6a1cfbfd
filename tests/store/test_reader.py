"""Reading a packed store back gives every source field, mask, RLE and JPEG, bit for bit."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import orjson
import pytest
import simplejpeg
from pycocotools import mask as mask_util

from sa1b_pack import Store, StoreError, open_store
from sa1b_pack.format.files import FORMAT_VERSION
from sa1b_pack.write.packer import pack


@pytest.fixture(scope="module")
def store(packed_dir: Path) -> Store:
    return open_store(packed_dir)


def source_masks(doc: dict) -> np.ndarray:
    """(N, H, W) uint8 masks of the source JSON, decoded by pycocotools."""
    height, width = doc["image"]["height"], doc["image"]["width"]
    anns = doc["annotations"]
    if not anns:
        return np.zeros((0, height, width), np.uint8)
    rles = [
        {"size": a["segmentation"]["size"], "counts": a["segmentation"]["counts"].encode()}
        for a in anns
    ]
    return np.ascontiguousarray(np.moveaxis(mask_util.decode(rles), -1, 0))


def test_length_and_global_order(store: Store, source_images) -> None:
    assert len(store) == len(source_images) == 27
    assert store.shards == ["sa_000000", "sa_000001", "sa_000002"]
    got = [(s.shard, s.image_id) for s in store]
    assert got == [(src.shard, src.image_id) for src in source_images]
    assert got == sorted(got)
    assert store.info()["masks"] == sum(len(src.doc["annotations"]) for src in source_images)


def test_image_fields_equal_source(store: Store, source_images) -> None:
    for i, src in enumerate(source_images):
        s = store[i]
        image = src.doc["image"]
        assert s.shard == src.shard
        assert (s.image_id, s.file_name, s.width, s.height) == (
            image["image_id"],
            image["file_name"],
            image["width"],
            image["height"],
        )
        assert type(s.image_id) is int and type(s.width) is int and type(s.height) is int
        assert len(s) == len(src.doc["annotations"])


def test_annotation_fields_equal_source(store: Store, source_images) -> None:
    for i, src in enumerate(source_images):
        s, anns = store[i], src.doc["annotations"]
        n = len(anns)
        np.testing.assert_array_equal(s.mask_ids, np.array([a["id"] for a in anns], np.int64))
        np.testing.assert_array_equal(s.area, np.array([a["area"] for a in anns], np.int64))
        for name in ("bbox", "crop_box"):
            expected = np.array([a[name] for a in anns], np.float64).reshape(n, 4)
            assert getattr(s, name).shape == (n, 4)
            assert getattr(s, name).tobytes() == expected.tobytes(), (i, name)
        for name in ("predicted_iou", "stability_score"):
            expected = np.array([a[name] for a in anns], np.float64)
            assert getattr(s, name).tobytes() == expected.tobytes(), (i, name)
        points = np.array([a["point_coords"] for a in anns], np.float64).reshape(n, 1, 2)
        assert s.point_coords.shape == (n, 1, 2)
        assert s.point_coords.tobytes() == points.tobytes()


def test_masks_equal_pycocotools(store: Store, source_images) -> None:
    for i, src in enumerate(source_images):
        masks = store[i].masks()
        expected = source_masks(src.doc)
        assert masks.dtype == np.uint8
        assert masks.shape == expected.shape
        np.testing.assert_array_equal(masks, expected, err_msg=f"image {i}")


def test_rle_equals_source_segmentation(store: Store, source_images) -> None:
    for i, src in enumerate(source_images):
        s = store[i]
        for j, ann in enumerate(src.doc["annotations"]):
            assert s.rle(j) == ann["segmentation"], (i, j)
        with pytest.raises(IndexError):
            s.rle(len(s))


def test_jpeg_bytes_and_pixels_equal_source(store: Store, source_images) -> None:
    for i, src in enumerate(source_images):
        s = store[i]
        assert bytes(s.jpeg) == src.jpeg
        image = s.image()
        expected = simplejpeg.decode_jpeg(src.jpeg, colorspace="RGB")
        assert image.shape == (s.height, s.width, 3) and image.dtype == np.uint8
        np.testing.assert_array_equal(image, expected)


def test_images_without_annotations(store: Store, source_images) -> None:
    empty = [i for i, src in enumerate(source_images) if not src.doc["annotations"]]
    assert len(empty) == 3  # synth puts one per small shard
    for i in empty:
        s = store[i]
        assert len(s) == 0
        assert s.masks().shape == (0, s.height, s.width)
        assert s.mask_ids.shape == (0,) and s.bbox.shape == (0, 4)
        assert s.point_coords.shape == (0, 1, 2)
        with pytest.raises(IndexError):
            s.rle(0)


def test_index_of_inverts_order(store: Store, source_images) -> None:
    for i, src in enumerate(source_images):
        assert store.index_of(src.image_id) == i
    with pytest.raises(KeyError):
        store.index_of(max(src.image_id for src in source_images) + 1)
    with pytest.raises(KeyError):
        store.index_of(0)


def test_negative_and_out_of_range_indices(store: Store, source_images) -> None:
    assert store[-1].image_id == source_images[-1].image_id
    assert store[-len(store)].image_id == source_images[0].image_id
    for bad in (len(store), -len(store) - 1):
        with pytest.raises(IndexError):
            store[bad]


def test_masks_into_out_buffers(store: Store, source_images) -> None:
    i = next(i for i, src in enumerate(source_images) if len(src.doc["annotations"]) > 1)
    s = store[i]
    expected = source_masks(source_images[i].doc)
    shape = (len(s), s.height, s.width)
    out8 = np.full(shape, 7, np.uint8)
    assert s.masks(out=out8) is out8
    np.testing.assert_array_equal(out8, expected)
    outb = np.ones(shape, bool)
    assert s.masks(out=outb) is outb
    np.testing.assert_array_equal(outb, expected.astype(bool))


@pytest.mark.parametrize(
    "make",
    [
        lambda n, h, w: np.empty((n + 1, h, w), np.uint8),
        lambda n, h, w: np.empty((n, w, h), np.uint8),
        lambda n, h, w: np.empty((n, h, w), np.int32),
        lambda n, h, w: np.empty((n, h, w), np.float32),
        lambda n, h, w: np.empty((n, h, w * 2), np.uint8)[:, :, ::2],
    ],
    ids=["extra-mask", "transposed", "int32", "float32", "strided"],
)
def test_masks_out_wrong_shape_or_dtype(store: Store, source_images, make) -> None:
    i = next(i for i, src in enumerate(source_images) if src.doc["annotations"])
    s = store[i]
    with pytest.raises(ValueError):
        s.masks(out=make(len(s), s.height, s.width))


def test_views_are_read_only(store: Store, source_images) -> None:
    i = next(i for i, src in enumerate(source_images) if src.doc["annotations"])
    s = store[i]
    for name in ("bbox", "area", "mask_ids", "predicted_iou", "stability_score", "crop_box"):
        view = getattr(s, name)
        assert not view.flags.writeable, name
        with pytest.raises(ValueError):
            view[0] = 0
    with pytest.raises(ValueError):
        s.point_coords[0, 0, 0] = 0
    with pytest.raises(ValueError):
        s.runs(0)[0] = 0
    jpeg = s.jpeg
    assert jpeg.readonly
    with pytest.raises(TypeError):
        jpeg[0] = 0
    assert bytes(store[i].jpeg) == source_images[i].jpeg  # nothing was changed


def test_info_from_manifest(store: Store, source_images, source_dir: Path) -> None:
    info = store.info()
    assert info["shards"] == 3 and info["images"] == len(source_images)
    assert info["masks"] == sum(len(src.doc["annotations"]) for src in source_images)
    assert info["format_version"] == FORMAT_VERSION
    assert info["skipped_members"] == 0
    assert info["source_bytes"] == sum(p.stat().st_size for p in source_dir.glob("sa_*.tar"))
    parts = Path(store.url) / "parts"
    assert info["store_bytes"] == sum(f.stat().st_size for f in parts.glob("sa_*/*"))


def test_open_store_on_a_non_store(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="not a sa1b_pack store"):
        open_store(tmp_path)


def test_part_without_any_mask(tmp_path: Path, tools) -> None:
    """A shard whose images all lack annotations: empty annotation table, empty counts.bin."""
    src = tmp_path / "src"
    members = []
    for image_id in (3, 1):
        jpeg, doc = tools.sample_pair(image_id, seed=image_id, n_masks=0)
        members += [(f"sa_{image_id}.jpg", jpeg), (f"sa_{image_id}.json", orjson.dumps(doc))]
    tools.write_tar(src / "sa_000000.tar", members)
    tools.write_tar(src / "sa_000001.tar", tools.sample_members(100_001, seed=4))
    report = pack(src, tmp_path / "dst", [0, 1], progress=False)
    assert report.ok and report.images == 3
    store = open_store(tmp_path / "dst")
    assert [s.image_id for s in store] == [1, 3, 100_001]
    for s, (name, data) in zip(store, [members[2], members[0]], strict=False):
        assert name == f"sa_{s.image_id}.jpg" and bytes(s.jpeg) == data
        assert len(s) == 0 and s.masks().shape == (0, s.height, s.width)
        assert s.bbox.shape == (0, 4) and s.point_coords.shape == (0, 1, 2)
    assert len(store[2]) > 0 and store[2].masks().shape[0] == len(store[2])


def test_store_pickles_by_path(store: Store, source_images) -> None:
    copy = pickle.loads(pickle.dumps(store))
    assert len(pickle.dumps(store)) < 1000  # only the path travels
    assert copy.url == store.url and len(copy) == len(store)
    i = len(store) // 2
    assert bytes(copy[i].jpeg) == source_images[i].jpeg
    np.testing.assert_array_equal(copy[i].masks(), store[i].masks())


def nearest_rows_cols(height: int, width: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """The documented sampling: output (y, x) <- source (floor((y+.5)H/h), floor((x+.5)W/w))."""
    rows = np.floor((np.arange(h) + 0.5) * height / h).astype(int)
    cols = np.floor((np.arange(w) + 0.5) * width / w).astype(int)
    return rows, cols


def test_masks_subsets_sizes_and_padding_equal_pycocotools(store: Store, source_images) -> None:
    rng = np.random.default_rng(3)
    for i, src in enumerate(source_images):
        s, full = store[i], source_masks(src.doc)
        n = len(full)
        pick = rng.permutation(n)[: max(n // 2, 1)] if n else np.array([], int)
        np.testing.assert_array_equal(s.masks(pick), full[pick])
        for h, w in ((16, 16), (7, 31), (2 * s.height + 1, s.width // 3 + 1)):
            rows, cols = nearest_rows_cols(s.height, s.width, h, w)
            np.testing.assert_array_equal(
                s.masks(pick, size=(h, w)), full[pick][:, rows][:, :, cols]
            )
        longest = 64
        scale = longest / max(s.height, s.width)
        h, w = int(s.height * scale + 0.5), int(s.width * scale + 0.5)
        padded = s.masks(pick, longest=longest, pad=True)
        assert padded.shape == (len(pick), longest, longest)
        rows, cols = nearest_rows_cols(s.height, s.width, h, w)
        np.testing.assert_array_equal(padded[:, :h, :w], full[pick][:, rows][:, :, cols])
        assert not padded[:, h:].any() and not padded[:, :, w:].any()
        np.testing.assert_array_equal(s.masks(pick, longest=longest), padded[:, :h, :w])


def test_masks_out_of_range_and_bad_options(store: Store) -> None:
    s = next(x for x in store if len(x) > 2)
    for bad in ([len(s)], [-1], [0, len(s) + 5]):
        with pytest.raises(IndexError, match="out of range"):
            s.masks(bad)
    with pytest.raises(ValueError, match="size or longest"):
        s.masks(size=(8, 8), longest=8)
    with pytest.raises(ValueError, match="pad needs longest"):
        s.masks(pad=True)
    buf = np.full((2, 64, 64), 9, bool)
    assert s.masks([1, 0], longest=64, pad=True, out=buf) is buf
    np.testing.assert_array_equal(buf, s.masks([1, 0], longest=64, pad=True).astype(bool))


def test_mask_iou_and_containment_equal_pycocotools(store: Store, source_images) -> None:
    checked = 0
    for i, src in enumerate(source_images):
        s = store[i]
        rles = [
            {"size": a["segmentation"]["size"], "counts": a["segmentation"]["counts"].encode()}
            for a in src.doc["annotations"]
        ]
        if not rles:
            assert s.mask_iou().shape == (0, 0)
            continue
        np.testing.assert_array_equal(s.mask_iou(), mask_util.iou(rles, rles, [0] * len(rles)))
        full = source_masks(src.doc).astype(bool)
        inter = np.array([[np.logical_and(a, b).sum() for b in full] for a in full])
        expected = np.divide(
            inter, full.sum((1, 2))[:, None], out=np.zeros(inter.shape), where=inter > 0
        )
        np.testing.assert_array_equal(s.mask_containment(), expected)
        if len(s) > 1:
            np.testing.assert_array_equal(s.mask_iou([1, 0]), s.mask_iou()[[1, 0]][:, [1, 0]])
        checked += 1
    assert checked > 0


def test_prefetch_advises_the_range_from_its_page(
    packed_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any byte range becomes one madvise from the page holding its first byte to its last
    byte, which the kernel accepts; empty or out-of-bounds ranges advise nothing."""
    import mmap

    from sa1b_pack.read import parts

    calls, real = [], parts._libc.madvise

    class Recording:
        def madvise(self, address: int, length: int, advice: int) -> int:
            calls.append((address, length, advice, real(address, length, advice)))
            return calls[-1][-1]

    monkeypatch.setattr(parts, "_libc", Recording())
    jpeg = open_store(packed_dir).part(0)._payloads["jpeg.bin"]
    for start, size in ((0, 1), (1, 4095), (4097, 10), (len(jpeg) - 3, 3)):
        calls.clear()
        parts.prefetch(jpeg, start, size)
        ((address, length, advice, returned),) = calls
        first = jpeg.ctypes.data + start
        assert address % mmap.PAGESIZE == 0 and address <= first < address + mmap.PAGESIZE
        assert address + length == first + size and advice == mmap.MADV_WILLNEED
        assert returned == 0, (start, size)  # the kernel took the range: aligned and mapped
    calls.clear()
    for start, size in ((5, 0), (-1, 2), (len(jpeg) - 3, 4)):
        parts.prefetch(jpeg, start, size)
    assert calls == []
    parts.prefetch(np.zeros(10, np.uint8), 0, 10)  # not a file mapping: advised, a no-op
    assert len(calls) == 1


def test_sample_has_one_accessor_per_copied_mask_column(store: Store, source_images) -> None:
    """The column list drives Sample: every copied numeric mask column is an accessor, equal
    to the source JSON's values (one line in format/columns.py adds a column everywhere)."""
    from sa1b_pack.format.columns import MASK_COLUMNS

    s, anns = store[0], source_images[0].doc["annotations"]
    copied = [c for c in MASK_COLUMNS if c.source is not None and c.numeric]
    assert {c.attribute or c.name for c in copied} >= {"mask_ids", "bbox", "area", "crop_box"}
    for c in copied:
        got = getattr(type(s), c.attribute or c.name)
        assert isinstance(got, property) and c.source in got.__doc__, c.name
        want = []
        for a in anns:
            value = a
            for key in c.source.split("."):
                value = value[int(key)] if key.isdigit() else value[key]
            want.append(value)
        np.testing.assert_array_equal(getattr(s, c.attribute or c.name), np.array(want))

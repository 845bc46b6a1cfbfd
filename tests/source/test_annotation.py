"""Annotation JSON -> typed columns: exact values, named errors, nothing lost or "fixed"."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import orjson
import pytest
from pycocotools import mask as mask_util

from sa1b_pack import open_store
from sa1b_pack.codec.rle import string_to_runs
from sa1b_pack.source.annotation import AnnotationError, parse_annotation_json
from sa1b_pack.source.document import build_document
from sa1b_pack.testing.rle_reference import runs_to_string
from sa1b_pack.write.packer import pack

H, W = 6, 8


@pytest.fixture(scope="module")
def doc(tools) -> dict:
    _, doc = tools.sample_pair(41, seed=5)
    assert len(doc["annotations"]) >= 3
    return doc


def parse(doc: dict):
    return parse_annotation_json(orjson.dumps(doc))


def decode_counts(counts: str, h: int = H, w: int = W) -> np.ndarray:
    return mask_util.decode({"size": [h, w], "counts": counts.encode()})


def test_valid_document(doc: dict) -> None:
    parsed = parse(doc)
    anns = doc["annotations"]
    image = doc["image"]
    assert tuple(parsed.image[k] for k in ("image_id", "file_name", "width", "height")) == (
        image["image_id"],
        image["file_name"],
        image["width"],
        image["height"],
    )
    assert len(parsed) == len(anns) and parsed.extra is None
    np.testing.assert_array_equal(parsed.masks["id"], [a["id"] for a in anns])
    np.testing.assert_array_equal(parsed.masks["area"], [a["area"] for a in anns])
    assert (
        parsed.masks["bbox"].tobytes() == np.array([a["bbox"] for a in anns], np.float64).tobytes()
    )
    assert parsed.masks["crop_box"].tobytes() == np.array([a["crop_box"] for a in anns]).tobytes()
    assert parsed.masks["predicted_iou"].tolist() == [a["predicted_iou"] for a in anns]
    assert parsed.masks["stability_score"].tolist() == [a["stability_score"] for a in anns]
    assert parsed.point_counts.tolist() == [1] * len(anns)
    assert parsed.points.tolist() == [p for a in anns for p in a["point_coords"]]
    seg_size = np.stack([parsed.masks["seg_height"], parsed.masks["seg_width"]], axis=1)
    assert seg_size.tolist() == [a["segmentation"]["size"] for a in anns]
    assert parsed.extras == [None] * len(anns)
    assert parsed.counts == [a["segmentation"]["counts"].encode() for a in anns]


def test_quirks_are_kept(doc: dict) -> None:
    doc = copy.deepcopy(doc)
    ann = doc["annotations"][0]
    ann["predicted_iou"] = 1.0123
    ann["bbox"] = [1.0, 2.0, 0.0, 0.0]
    ann["area"] = 0
    ann["point_coords"] = [[-5.5, 1e9], [3, 4]]
    parsed = parse(doc)
    assert parsed.masks["predicted_iou"][0] == 1.0123
    assert parsed.masks["bbox"][0].tolist() == [1.0, 2.0, 0.0, 0.0]
    assert parsed.masks["area"][0] == 0
    assert parsed.point_counts[:2].tolist() == [2, 1]
    assert parsed.points[:2].tolist() == [[-5.5, 1e9], [3.0, 4.0]]


def test_no_annotations(doc: dict) -> None:
    parsed = parse({"image": doc["image"], "annotations": []})
    assert len(parsed) == 0
    assert (
        parsed.masks["bbox"].shape == (0, 4)
        and parsed.points.shape == (0, 2)
        and parsed.counts == []
    )


def _delete(doc: dict, path: tuple) -> None:
    *parents, last = path
    for key in parents:
        doc = doc[key]
    del doc[last]


def _set(doc: dict, path: tuple, value) -> None:
    *parents, last = path
    for key in parents:
        doc = doc[key]
    doc[last] = value


@pytest.mark.parametrize(
    "path",
    [
        ("image",),
        ("annotations",),
        ("image", "image_id"),
        ("image", "width"),
        ("image", "height"),
        ("image", "file_name"),
        *[
            ("annotations", 1, key)
            for key in (
                "id",
                "segmentation",
                "area",
                "bbox",
                "predicted_iou",
                "stability_score",
                "point_coords",
                "crop_box",
            )
        ],
        ("annotations", 1, "segmentation", "size"),
        ("annotations", 1, "segmentation", "counts"),
    ],
    ids=lambda p: ".".join(map(str, p)),
)
def test_missing_key_named(doc: dict, path: tuple) -> None:
    doc = copy.deepcopy(doc)
    _delete(doc, path)
    with pytest.raises(AnnotationError) as info:
        parse(doc)
    message = str(info.value)
    assert f"missing key {'image.' if path[0] == 'image' and len(path) > 1 else ''}" in message
    assert str(path[-1]) in message
    if path[0] == "annotations" and len(path) > 1:
        assert "annotations[1]" in message


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (("image", "image_id"), "41", "image.image_id"),
        (("image", "image_id"), True, "image.image_id"),
        (("image", "width"), 8.0, "image.width"),
        (("image", "width"), True, "image.width"),
        (("image", "height"), None, "image.height"),
        (("image", "file_name"), 7, "image.file_name"),
        (("annotations", 1, "id"), True, "id"),
        (("annotations", 1, "id"), "12", "id"),
        (("annotations", 1, "area"), False, "area"),
        (("annotations", 1, "area"), "100", "area"),
        (("annotations", 1, "predicted_iou"), "0.9", "predicted_iou"),
        (("annotations", 1, "predicted_iou"), True, "predicted_iou"),
        (("annotations", 1, "stability_score"), None, "stability_score"),
        (("annotations", 1, "bbox"), [0, 0, "1", 1], "bbox"),
        (("annotations", 1, "bbox"), [0, 0, 1], "bbox"),
        (("annotations", 1, "bbox"), [0, True, 1, 1], "bbox"),
        (("annotations", 1, "crop_box"), "0 0 1 1", "crop_box"),
        (("annotations", 1, "point_coords"), [["1", 2]], "point_coords"),
        (("annotations", 1, "point_coords"), [[1, 2, 3]], "point_coords"),
        (("annotations", 1, "point_coords"), 5, "point_coords"),
        (("annotations", 1, "segmentation"), "abc", "segmentation"),
        (("annotations", 1, "segmentation", "size"), [True, 1], "segmentation.size"),
        (("annotations", 1, "segmentation", "size"), "6x8", "segmentation.size"),
        (("annotations", 1, "segmentation", "counts"), [3, 2], "counts"),
        (("annotations", 1, "segmentation", "counts"), 17, "counts"),
    ],
)
def test_wrong_type_named(doc: dict, path: tuple, value, field: str) -> None:
    doc = copy.deepcopy(doc)
    _set(doc, path, value)
    with pytest.raises(AnnotationError, match=field.replace(".", r"\.")) as info:
        parse(doc)
    if path[0] == "annotations":
        assert "annotations[1]" in str(info.value)


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (("annotations", 1, "id"), 2**63, "id"),
        (("annotations", 1, "area"), 2**64 - 1, "area"),
        (("image", "image_id"), 2**63, "image.image_id"),
    ],
)
def test_integer_out_of_int64_range_named(doc: dict, path: tuple, value: int, field: str) -> None:
    """Valid JSON integers that do not fit the int64 columns: an AnnotationError, not a crash."""
    doc = copy.deepcopy(doc)
    _set(doc, path, value)
    raw = orjson.dumps(doc)
    assert orjson.loads(raw) == doc  # orjson reads them back as exact Python ints
    with pytest.raises(AnnotationError, match=field.replace(".", r"\.")) as info:
        parse_annotation_json(raw)
    if path[0] == "annotations":
        assert "annotations[1]" in str(info.value)


@pytest.mark.parametrize(
    ("counts", "why"),
    [
        ("3240?ON", "sum"),  # valid string, but for a 6x8 mask
        ("32 40?ON", "character"),
        ("3240?Ob", "continuation"),
        ("", "empty"),
        ("3240?ONé", "ASCII"),
    ],
)
def test_malformed_counts(doc: dict, counts: str, why: str) -> None:
    doc = copy.deepcopy(doc)
    doc["annotations"][2]["segmentation"]["counts"] = counts
    with pytest.raises(AnnotationError, match=why) as info:
        parse(doc)
    assert "annotations[2]" in str(info.value)


def test_size_must_match_image(doc: dict) -> None:
    doc = copy.deepcopy(doc)
    h, w = doc["annotations"][0]["segmentation"]["size"]
    doc["annotations"][0]["segmentation"]["size"] = [w, h] if h != w else [h + 1, w]
    with pytest.raises(AnnotationError, match=r"segmentation\.size"):
        parse(doc)


@pytest.mark.parametrize("raw", [b"{", b"[]", b'{"image": [], "annotations": []}', b"null"])
def test_not_an_annotation_document(raw: bytes) -> None:
    with pytest.raises(AnnotationError):
        parse_annotation_json(raw)


def test_unknown_keys_land_in_extra(doc: dict) -> None:
    doc = copy.deepcopy(doc)
    doc["licence"] = {"name": "SA-1B", "v": [1, 2]}
    doc["image"]["camera"] = "x"
    doc["annotations"][1]["label"] = None
    doc["annotations"][1]["segmentation"]["note"] = 3
    parsed = parse(doc)
    assert orjson.loads(parsed.extra) == {
        "licence": {"name": "SA-1B", "v": [1, 2]},
        "image": {"camera": "x"},
    }
    assert parsed.extras[0] is None and parsed.extras[2] is None
    assert orjson.loads(parsed.extras[1]) == {"label": None, "segmentation": {"note": 3}}


# Verbatim counts: strings our encoder would not give back byte for byte.
CANONICAL = "3240?ON"  # pycocotools' string of a 6x8 mask whose first run is 3
REDUNDANT = "S0" + CANONICAL[1:]  # first run 3 spelled with an extra continuation group
ZERO_START = "00:5g0"  # runs [0, 0, 10, 5, 33]: starts with two zero-length runs
FULL = "0`1"  # runs [0, 48]: the whole image is foreground


def test_counts_fixtures_are_what_they_claim() -> None:
    mask = np.zeros((H, W), np.uint8, order="F")
    mask[3:5, 0:2] = 1
    mask[0, 5] = 1
    assert mask_util.encode(mask)["counts"].decode() == CANONICAL
    np.testing.assert_array_equal(decode_counts(REDUNDANT), mask)
    zero = decode_counts(ZERO_START)
    assert zero.T.reshape(-1)[10:15].tolist() == [1] * 5 and int(zero.sum()) == 5
    assert decode_counts(FULL).all()
    assert runs_to_string(np.array([0, H * W], np.uint32)) == FULL


def tiny_doc(image_id: int, counts: list[str], extra: dict | None = None) -> dict:
    anns = []
    for k, c in enumerate(counts):
        area = int(decode_counts(c).sum())
        bbox = mask_util.toBbox({"size": [H, W], "counts": c.encode()}).tolist()
        anns.append(
            {
                "id": 100 + 7 * k,
                "segmentation": {"size": [H, W], "counts": c},
                "area": area,
                "bbox": bbox,
                "predicted_iou": 0.5 + k / 10,
                "stability_score": 0.9,
                "point_coords": [[1.5, 2.5]],
                "crop_box": [0.0, 0.0, float(W), float(H)],
                **(extra or {}),
            }
        )
    image = {"image_id": image_id, "width": W, "height": H, "file_name": f"sa_{image_id}.jpg"}
    return {"image": image, "annotations": anns}


def test_counts_strings_kept_as_written() -> None:
    doc = tiny_doc(9, [CANONICAL, REDUNDANT, ZERO_START])
    parsed = parse(doc)
    assert parsed.counts == [CANONICAL.encode(), REDUNDANT.encode(), ZERO_START.encode()]
    assert (
        REDUNDANT != CANONICAL
        and decode_counts(REDUNDANT).tolist() == decode_counts(CANONICAL).tolist()
    )


def test_non_canonical_counts_survive_packing(tmp_path: Path, tools) -> None:
    counts = [ZERO_START, REDUNDANT, CANONICAL, FULL]
    doc = tiny_doc(9, counts, extra={"note": "kept"})
    doc["annotations"][1]["point_coords"] = []
    doc["annotations"][2]["point_coords"] = [[0.5, 0.5], [7.0, -1.0]]
    empty = tiny_doc(4, [])
    jpeg9, jpeg4 = tools.tiny_jpeg(H, W, seed=1), tools.tiny_jpeg(H, W, seed=2)
    src = tmp_path / "src"
    tools.write_tar(
        src / "sa_000000.tar",
        [
            ("sa_9.json", orjson.dumps(doc)),
            ("sa_4.jpg", jpeg4),
            ("sa_4.json", orjson.dumps(empty)),
            ("sa_9.jpg", jpeg9),
        ],
    )
    report = pack(src, tmp_path / "dst", [0], progress=False)
    assert report.ok and report.images == 2 and report.masks == 4
    store = open_store(tmp_path / "dst")
    assert [s.image_id for s in store] == [4, 9]
    assert len(store[0]) == 0 and store[0].masks().shape == (0, H, W)
    s = store[1]
    assert bytes(s.jpeg) == jpeg9
    for j, c in enumerate(counts):
        assert s.rle(j) == doc["annotations"][j]["segmentation"]
        assert s.rle(j)["counts"] == c
    expected = np.stack([decode_counts(c) for c in counts])
    np.testing.assert_array_equal(s.masks(), expected)
    assert s.runs(0).tolist() == [0, 0, 10, 5, 33]
    assert s.runs(3).tolist() == [0, H * W]
    assert s.area.tolist() == [int(m.sum()) for m in expected]
    points = s.point_coords  # mixed point counts: a list of (P_j, 2) arrays
    assert [p.tolist() for p in points] == [a["point_coords"] for a in doc["annotations"]]


def uncompressed(counts: str, h: int = H, w: int = W) -> list[int]:
    """The run list of a COCO string, as SAM writes it without --convert-to-rle."""
    return string_to_runs(counts, h, w).tolist()


def test_uncompressed_rle_is_stored_as_pycocotools_string() -> None:
    doc = tiny_doc(9, [CANONICAL, ZERO_START, FULL, REDUNDANT])
    for ann in doc["annotations"][:3]:
        ann["segmentation"]["counts"] = uncompressed(ann["segmentation"]["counts"])
    doc["annotations"][1]["segmentation"]["note"] = "kept"
    parsed = parse(doc)
    coco = [
        mask_util.frPyObjects(a["segmentation"], H, W)["counts"] for a in doc["annotations"][:3]
    ]
    assert parsed.counts == [*coco, REDUNDANT.encode()]
    assert parsed.counts[:3] == [CANONICAL.encode(), ZERO_START.encode(), FULL.encode()]
    assert parsed.converted == 3 and parsed.warnings == []
    mark = {"segmentation": {"counts": "uncompressed_rle"}}
    assert [orjson.loads(e) if e else None for e in parsed.extras] == [
        mark,
        {"segmentation": {"counts": "uncompressed_rle", "note": "kept"}},
        mark,
        None,
    ]
    strings = [c.decode() for c in parsed.counts]
    rebuilt = build_document(
        parsed.image, parsed.masks | {"point_coords": [[[1.5, 2.5]]] * 4}, strings,
        parsed.extra, parsed.extras,
    )  # fmt: skip
    assert rebuilt == doc


@pytest.mark.parametrize(
    ("counts", "why"),
    [
        ([50, -2], "uncompressed RLE counts: a negative run"),
        ([47], "uncompressed RLE counts: runs that do not sum to height \\* width"),
        ([40, 8.0], "runs must be integers, got float 8.0"),
        ([40, True, 7], "runs must be integers, got bool"),
        ([2**40, 1], "overflows 32 bits"),
        ([2**64 - 1, 1], "overflows 32 bits"),
    ],
)
def test_bad_uncompressed_rle_named(doc: dict, counts: list, why: str) -> None:
    doc = copy.deepcopy(doc)
    doc["annotations"][2]["segmentation"]["counts"] = counts
    with pytest.raises(AnnotationError, match=why) as info:
        parse(doc)
    assert str(info.value).startswith(f"annotations[2] (id {doc['annotations'][2]['id']}): ")


def test_negative_area_rejected(doc: dict) -> None:
    doc = copy.deepcopy(doc)
    doc["annotations"][1]["area"] = -3
    doc["annotations"][2]["area"] = -4
    ann_id = doc["annotations"][1]["id"]
    with pytest.raises(AnnotationError, match=rf"^annotations\[1\] \(id {ann_id}\): area -3 is"):
        parse(doc)


def test_repeated_id_rejected(doc: dict) -> None:
    doc = copy.deepcopy(doc)
    anns = doc["annotations"]
    anns[2]["id"] = anns[0]["id"]
    with pytest.raises(AnnotationError, match=r"^annotations\[2\] .*repeats annotations\[0\]'s"):
        parse(doc)
    anns[2]["id"] = anns[1]["id"] + 1  # sparse ids stay fine, in any order
    anns[0]["id"] = anns[1]["id"] + 2
    assert parse(doc).warnings == []


def coco_box(ann: dict) -> list[float]:
    seg = ann["segmentation"]
    return mask_util.toBbox({"size": seg["size"], "counts": seg["counts"].encode()}).tolist()


def test_released_quirks_pass_silently(tools) -> None:
    """bbox as toBbox or one pixel smaller (SAM's), ints among floats, predicted_iou > 1,
    points outside their mask, sparse ids, zero-length first runs: no warning, no error."""
    smaller = 0
    for image_id in range(1, 9):
        _, doc = tools.sample_pair(image_id, seed=image_id)
        for ann in doc["annotations"]:
            smaller += ann["bbox"] != coco_box(ann)
        doc["annotations"][-1:] = [dict(a, bbox=[int(v) for v in a["bbox"]])
                                   for a in doc["annotations"][-1:]]  # fmt: skip
        assert parse(doc).warnings == []
    assert smaller > 0  # the generator really holds SAM's boxes
    assert parse(tiny_doc(9, [ZERO_START, FULL, CANONICAL])).warnings == []


def test_doubtful_values_warned_and_kept(doc: dict) -> None:
    doc = copy.deepcopy(doc)
    anns = doc["annotations"]
    doc["image"]["file_name"] = "photo.jpg"
    anns[1]["area"] += 1
    anns[2]["area"] += 2
    anns[0]["bbox"] = [v + 1 for v in anns[0]["bbox"]]
    parsed = parse(doc)
    a1, a0 = anns[1], anns[0]
    assert parsed.warnings == [
        f"image.file_name 'photo.jpg' is not the JPEG member's name sa_{parsed.image_id}.jpg",
        f"annotations[1] (id {a1['id']}): area {a1['area']} disagrees with its mask's "
        f"{a1['area'] - 1} pixels (and 1 more annotations)",
        f"annotations[0] (id {a0['id']}): bbox {[float(v) for v in a0['bbox']]} disagrees with "
        f"its mask's box {coco_box(a0)} (toBbox; SAM's is w, h one less)",
    ]
    assert parsed.masks["area"][1] == a1["area"] and parsed.image["file_name"] == "photo.jpg"
    assert parsed.masks["bbox"][0].tolist() == a0["bbox"]

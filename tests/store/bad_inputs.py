"""Every kind of bad input the packer must survive, as small shards built on the fly.

Used by tests/store/test_bad_inputs.py, and run as a script it prints docs/reliability.md's
table of what happens to each kind under ``--on-error fail`` and ``--on-error skip``:

    python tests/store/bad_inputs.py
"""

from __future__ import annotations

import copy
import gzip
import io
import sys
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from sa1b_pack import pack
from sa1b_pack.testing import synth
from sa1b_pack.testing.rle_reference import runs_to_string, string_to_runs

BAD_SHARD = 0  # holds the bad input, beside good samples
GOOD_SHARD = 1  # always fine: must pack whatever happens to shard 0
BAD_ID = 2  # the image the bad input is about


def sample(image_id: int) -> tuple[bytes, dict]:
    rng = np.random.default_rng(image_id)
    return synth.synth_sample(rng, image_id, small=True, n_masks=4)


def members(image_id: int) -> list[tuple[str, bytes]]:
    jpeg, doc = sample(image_id)
    return [(f"sa_{image_id}.jpg", jpeg), (f"sa_{image_id}.json", orjson.dumps(doc))]


def tar_bytes(entries: list[tuple[str, bytes | None]]) -> bytes:
    """A tar of (name, data) in order; data None makes a directory entry."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def with_doc(change: Callable[[dict], None]) -> bytes:
    """Shard 0: images 1 and 3 fine, image 2's JSON changed by ``change``."""
    jpeg, doc = sample(BAD_ID)
    doc = copy.deepcopy(doc)
    change(doc)
    return tar_bytes(
        [*members(1), ("sa_2.jpg", jpeg), ("sa_2.json", orjson.dumps(doc)), *members(3)]
    )


def with_jpeg(change: Callable[[bytes], bytes]) -> bytes:
    jpeg, doc = sample(BAD_ID)
    return tar_bytes(
        [*members(1), ("sa_2.jpg", change(jpeg)), ("sa_2.json", orjson.dumps(doc)), *members(3)]
    )


def with_entries(entries: list[tuple[str, bytes | None]]) -> bytes:
    return tar_bytes([*members(1), *entries, *members(3)])


def set_counts(make: Callable[[str, int], str]) -> Callable[[dict], None]:
    def change(doc: dict) -> None:
        seg = doc["annotations"][0]["segmentation"]
        seg["counts"] = make(seg["counts"], seg["size"][0] * seg["size"][1])

    return change


def shift_last_run(by: int) -> Callable[[str, int], str]:
    def make(counts: str, _total: int) -> str:
        runs = string_to_runs(counts)
        runs[-1] += by
        return runs_to_string(runs)

    return make


def cut(data: bytes, where: Callable[[bytes], int]) -> bytes:
    return data[: where(data)]


def _member(data: bytes, name: str) -> tarfile.TarInfo:
    return next(m for m in tarfile.open(fileobj=io.BytesIO(data)) if m.name == name)


def mid_member(name: str) -> Callable[[bytes], int]:
    """Inside the data of member ``name``."""
    return lambda data: _member(data, name).offset_data + 100


def mid_header(name: str) -> Callable[[bytes], int]:
    """Inside the header of member ``name``."""
    return lambda data: _member(data, name).offset + 100


def after(name: str) -> Callable[[bytes], int]:
    """Right after member ``name``'s data and padding: no end-of-archive blocks."""
    return lambda data: _member(data, name).offset_data + -(-_member(data, name).size // 512) * 512


def delete(path: str) -> Callable[[dict], None]:
    def change(doc: dict) -> None:
        *parents, last = path.split(".")
        node = doc
        for key in parents:
            node = node[int(key)] if key.isdigit() else node[key]
        del node[last]

    return change


def set_value(path: str, value: object) -> Callable[[dict], None]:
    def change(doc: dict) -> None:
        *parents, last = path.split(".")
        node = doc
        for key in parents:
            node = node[int(key)] if key.isdigit() else node[key]
        node[last] = value

    return change


def widen(doc: dict) -> None:
    """JSON says 2 px wider than the JPEG; masks agree with the JSON, so only the header differs."""
    doc["image"]["width"] += 2
    h, w = doc["image"]["height"], doc["image"]["width"]
    for ann in doc["annotations"]:
        ann["segmentation"] = {"size": [h, w], "counts": runs_to_string([h * w])}


def no_annotations_list(doc: dict) -> None:
    doc["annotations"] = []


def uncompressed(spoil: Callable[[list[int]], list] = list) -> Callable[[dict], None]:
    """Every mask's counts as the list of its runs (SAM without --convert-to-rle), the first
    one's passed through ``spoil``."""

    def change(doc: dict) -> None:
        for k, ann in enumerate(doc["annotations"]):
            runs = string_to_runs(ann["segmentation"]["counts"])
            ann["segmentation"]["counts"] = spoil(runs) if k == 0 else runs

    return change


def repeat_id(doc: dict) -> None:
    doc["annotations"][3]["id"] = doc["annotations"][1]["id"]


def grow(key: str, by: list[float] | int) -> Callable[[dict], None]:
    def change(doc: dict) -> None:
        ann = doc["annotations"][1]
        ann[key] = [a + b for a, b in zip(ann[key], by, strict=True)] if key == "bbox" else (
            ann[key] + by)  # fmt: skip

    return change


@dataclass(frozen=True)
class Case:
    """A bad input; ``expect`` is "fails" (both modes fail the shard), "sample" (fail mode
    fails the shard, skip mode skips the sample), "reported" (left out, listed, rest packed),
    "warned" (packed as written, listed as a warning), "damaged" (fail mode fails the shard,
    skip mode packs the whole samples before the break), "duplicate" (packed, the id listed),
    "changed" (a committed shard's tar replaced: refused in both modes) or "packed".
    With ``then``, shard 0 is packed, its tar replaced by ``then()`` and packed again: the
    outcome is the second run's."""

    group: str
    name: str
    build: Callable[[], bytes]
    expect: str
    member: str  # the member the message must name
    then: Callable[[], bytes] | None = None


def _gzip_cut() -> bytes:
    data = gzip.compress(with_entries([]), mtime=0)
    return data[: len(data) * 2 // 3]


CASES = [
    Case("truncated tar", "cut inside the first member",
         lambda: cut(with_entries([]), mid_member("sa_1.jpg")), "fails", "sa_1.jpg"),
    Case("truncated tar", "cut inside a later member",
         lambda: cut(with_entries([]), mid_member("sa_3.jpg")), "damaged", "sa_3.jpg"),
    Case("truncated tar", "cut inside a header",
         lambda: cut(with_entries([]), mid_header("sa_3.json")), "damaged", "sa_3.jpg"),
    Case("truncated tar", "cut after the last member (no end marker)",
         lambda: cut(with_entries([]), after("sa_3.json")), "damaged", "sa_3.json"),
    Case("truncated tar", "gzip'd tar cut short", _gzip_cut, "damaged", ""),
    Case("not a tar", "an HTML error page saved as the shard",
         lambda: b"<!DOCTYPE html><html><head><title>403 Forbidden</title></head></html>",
         "fails", "HTML"),
    Case("not a tar", "an S3-style XML error saved as the shard",
         lambda: b'<?xml version="1.0"?><Error><Code>AccessDenied</Code>'
                 b"<Message>Request has expired</Message></Error>", "fails", "AccessDenied"),
    Case("not a tar", "an empty file", lambda: b"", "fails", "empty"),
    Case("malformed RLE", "character outside '0'..'o'",
         lambda: with_doc(set_counts(lambda c, t: c[:-1] + "~")), "sample", "sa_2.json"),
    Case("malformed RLE", "ends inside a continuation",
         lambda: with_doc(set_counts(lambda c, t: c + chr(48 + 0x20))), "sample", "sa_2.json"),
    Case("malformed RLE", "runs sum below h*w",
         lambda: with_doc(set_counts(shift_last_run(-1))), "sample", "sa_2.json"),
    Case("malformed RLE", "runs sum above h*w",
         lambda: with_doc(set_counts(shift_last_run(+1))), "sample", "sa_2.json"),
    Case("malformed RLE", "a negative run",
         lambda: with_doc(set_counts(lambda c, t: runs_to_string([t + 5, -5]))), "sample",
         "sa_2.json"),
    Case("malformed RLE", "uncompressed RLE with a negative run",
         lambda: with_doc(uncompressed(lambda r: [r[0] + 5, -5, *r[1:]])), "sample",
         "sa_2.json"),
    Case("malformed RLE", "uncompressed RLE not summing to h*w",
         lambda: with_doc(uncompressed(lambda r: r[:-1])), "sample", "sa_2.json"),
    Case("malformed RLE", "uncompressed RLE with a non-integer run",
         lambda: with_doc(uncompressed(lambda r: [*r[:-1], r[-1] - 0.5, 0.5])), "sample",
         "sa_2.json"),
    Case("missing keys", "no segmentation.counts",
         lambda: with_doc(delete("annotations.0.segmentation.counts")), "sample", "sa_2.json"),
    Case("missing keys", "no image.height", lambda: with_doc(delete("image.height")), "sample",
         "sa_2.json"),
    Case("missing keys", "no annotations", lambda: with_doc(delete("annotations")), "sample",
         "sa_2.json"),
    Case("wrong types", "a string where a number belongs",
         lambda: with_doc(set_value("annotations.0.area", "12")), "sample", "sa_2.json"),
    Case("wrong types", "a bool where an integer belongs",
         lambda: with_doc(set_value("image.image_id", True)), "sample", "sa_2.json"),
    Case("odd values", "a negative area", lambda: with_doc(set_value("annotations.2.area", -7)),
         "sample", "sa_2.json"),
    Case("odd values", "two annotations with one id", lambda: with_doc(repeat_id), "sample",
         "sa_2.json"),
    Case("doubtful values", "image.file_name is not the JPEG's name",
         lambda: with_doc(set_value("image.file_name", "IMG_0042.jpg")), "warned", "sa_2.json"),
    Case("doubtful values", "area disagrees with the mask", lambda: with_doc(grow("area", 3)),
         "warned", "sa_2.json"),
    Case("doubtful values", "bbox disagrees with the mask",
         lambda: with_doc(grow("bbox", [0, 0, 2, 0])), "warned", "sa_2.json"),
    Case("broken JPEG", "garbage after SOI",
         lambda: with_jpeg(lambda j: b"\xff\xd8" + bytes(range(256)) * 4), "sample", "sa_2.jpg"),
    Case("broken JPEG", "cut in half", lambda: with_jpeg(lambda j: j[: len(j) // 2]), "sample",
         "sa_2.jpg"),
    Case("broken JPEG", "not a JPEG at all", lambda: with_jpeg(lambda j: b"\x89PNG\r\n" + j[8:]),
         "sample", "sa_2.jpg"),
    Case("size mismatch", "mask size disagrees with the image",
         lambda: with_doc(set_value("annotations.0.segmentation.size", [7, 9])), "sample",
         "sa_2.json"),
    Case("size mismatch", "JSON width/height disagree with the JPEG header",
         lambda: with_doc(widen), "sample", "sa_2.json"),
    Case("pairing", "a .jpg without its .json", lambda: with_entries(members(BAD_ID)[:1]),
         "reported", "sa_2.jpg"),
    Case("pairing", "a .json without its .jpg", lambda: with_entries(members(BAD_ID)[1:]),
         "reported", "sa_2.json"),
    Case("pairing", "two members with the same name",
         lambda: with_entries([*members(BAD_ID), members(BAD_ID)[0]]), "sample", "sa_2.jpg"),
    Case("stray members", "README.txt", lambda: with_entries([("README.txt", b"hello")]),
         "reported", "README.txt"),
    Case("stray members", "a directory", lambda: with_entries([("extras/", None)]), "packed", ""),
    Case("stray members", "._sa_1.jpg (macOS metadata)",
         lambda: with_entries([("._sa_1.jpg", b"\x00\x05\x16\x07")]), "reported", "._sa_1.jpg"),
    Case("stray members", "sa_1.txt", lambda: with_entries([("sa_1.txt", b"x")]), "reported",
         "sa_1.txt"),
    Case("sources", "an image id also in another shard",
         lambda: with_entries(members(100_001)), "duplicate", ""),
    Case("sources", "a whole shard's tar replaced since it was packed",
         lambda: with_entries([]), "changed", "", then=lambda: with_entries(members(5))),
    Case("sources", "a damaged tar replaced by a whole download",
         lambda: cut(with_entries([]), mid_member("sa_3.jpg")), "packed", "",
         then=lambda: with_entries([])),
    Case("valid", "an empty annotations list", lambda: with_doc(no_annotations_list), "packed",
         ""),
    Case("valid", "uncompressed RLE (SAM without --convert-to-rle)",
         lambda: with_doc(uncompressed()), "packed", ""),
]  # fmt: skip


@dataclass
class Outcome:
    ok: bool
    images: int
    failed: str | None  # the failing shard's message
    errors: list[tuple[str, str]]  # skipped bad samples
    damage: list[str] | None  # [member, reason] where the tar breaks off
    skipped: list[tuple[str, str]]  # strays and orphans
    warnings: list[tuple[str, str]]  # packed as written, doubtful
    converted: int  # masks of the bad shard given as uncompressed RLE
    changed: str | None  # a committed shard whose tar was replaced, left as it was
    duplicates: list[str]  # "shard: ids also in other shard"
    good_shard_packed: bool
    leftovers: list[str]  # part folders of shards that failed


def run(case: Case, folder: Path, on_error: str) -> Outcome:
    src, dst = folder / "src", folder / f"dst-{on_error}"
    src.mkdir(parents=True, exist_ok=True)
    (src / "sa_000000.tar").write_bytes(case.build())
    good = tar_bytes([*members(100_001), *members(100_002)])
    (src / "sa_000001.tar").write_bytes(good)
    report = pack(src, dst, [BAD_SHARD, GOOD_SHARD], progress=False, on_error=on_error)
    if case.then is not None:
        (src / "sa_000000.tar").write_bytes(case.then())
        report = pack(src, dst, [BAD_SHARD, GOOD_SHARD], progress=False, on_error=on_error)
    parts = sorted(p.name for p in (dst / "parts").iterdir())
    manifest = orjson.loads((dst / "manifest.json").read_bytes())
    entry = manifest["shards"].get("sa_000000", {})
    return Outcome(
        ok=report.ok,
        images=sum(e["images"] for e in manifest["shards"].values()),
        failed=report.failed.get("sa_000000"),
        errors=report.errors.get("sa_000000", []),
        damage=report.damaged.get("sa_000000"),
        skipped=report.skipped_members.get("sa_000000", []),
        warnings=report.warnings.get("sa_000000", []),
        converted=entry.get("converted", {}).get("uncompressed_rle", 0),
        changed=report.changed.get("sa_000000"),
        duplicates=[
            f"{name}: {count} image ids also in {other}: {first}"
            for name, found in report.duplicates.items()
            for other, count, first in found
        ],
        good_shard_packed="sa_000001" in report.packed + report.skipped_existing,
        leftovers=[p for p in parts if p in report.failed],
    )


def describe(outcome: Outcome) -> str:
    if outcome.failed:
        return f"shard fails: `{outcome.failed}`"
    if outcome.changed:
        return f"left as it was packed; reported, exit status 1: `{outcome.changed}`"
    if outcome.duplicates:
        listed = "; ".join(f"`{d}`" for d in outcome.duplicates)
        return f"packed; reported (`errors`: duplicate): {listed}; `index_of` names both shards"
    if outcome.damage:
        member, reason = outcome.damage
        return (f"packed the {outcome.images - 2} whole images before the break; recorded "
                f"(`errors`: damaged): `{member}: {reason}`")  # fmt: skip
    if outcome.errors:
        return "skipped, recorded: " + "; ".join(f"`{m}: {r}`" for m, r in outcome.errors)
    if outcome.skipped:
        return "packed the rest; reported: " + "; ".join(f"`{m}: {r}`" for m, r in outcome.skipped)
    if outcome.warnings:
        return "packed as written; warned: " + "; ".join(f"`{m}: {r}`" for m, r in outcome.warnings)
    converted = f", {outcome.converted} masks converted" if outcome.converted else ""
    return f"packed ({outcome.images - 2} images in the shard{converted})"


def table() -> str:
    lines = [
        "| bad input | `--on-error fail` (default) | `--on-error skip` |",
        "|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for k, case in enumerate(CASES):
            cells = [describe(run(case, Path(tmp) / str(k), mode)) for mode in ("fail", "skip")]
            lines.append(f"| {case.group}: {case.name} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(table() + "\n")

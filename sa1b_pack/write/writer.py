"""One shard -> one complete part, written in a staging folder and published by the storage.

Members are paired by key across the whole shard: JPEG bytes and mask strings go to the payload
files the moment their member is read, and only small per-image records stay in memory until
the end, when the tables are written in image-id order. The caller commits the part by
listing it in the manifest.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import simplejpeg

from ..codec.jpeg import encode_jpeg, resize_longest
from ..errors import ConfigError
from ..format.files import (
    COUNTS_PAYLOAD,
    JPEG_PAYLOAD,
    PART_FILES,
    RESIZED_PAYLOAD,
    RESIZED_QUALITY,
    TABLE_FILES,
)
from ..source.annotation import AnnotationError, parse_annotation_json
from ..source.identity import source_identity
from ..source.shards import Member, ShardError, TarDamage, iter_members, shard_name
from ..storage import Storage
from ..storage.faults import crash_point
from ..store.manifest import file_digest
from .payload import PayloadFile, Syncer
from .tables import JpegRecord, JsonRecord, build_tables, write_table

ON_ERROR = ("fail", "skip")


@dataclass
class PartResult:
    """A written (not yet committed) part: its manifest entry, what was left out and what was
    packed with a doubt."""

    entry: dict[str, Any]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (member, reason)
    errors: list[tuple[str, str]] = field(default_factory=list)  # bad samples left out
    image_ids: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))  # sorted
    warnings: list[tuple[str, str]] = field(default_factory=list)  # packed, as written


def _jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the header; ValueError if unreadable or cut short (no EOI marker)."""
    try:
        height, width, _, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError as exc:
        raise ValueError(f"not a readable JPEG: {exc}") from None
    if data[-2:] != b"\xff\xd9":
        raise ValueError("JPEG ends without its end-of-image marker (cut short?)")
    return width, height


def write_part(
    tar_path: str | os.PathLike,
    index: int,
    storage: Storage,
    progress: Callable[[int], None] | None = None,
    image_longest: int | None = None,
    on_error: str = "fail",
    subset: np.ndarray | None = None,
) -> PartResult:
    """Pack shard ``index`` into a part of ``storage``, written in a staging folder and
    published (not yet committed: the caller lists it in the manifest); ShardError, with
    nothing left behind, if the shard is bad.

    ``image_longest`` also stores each image resized to that longest side (SAM's shape),
    re-encoded at RESIZED_QUALITY, for training stores that never need the full size.
    ``on_error``: "fail" raises ShardError at the first bad sample or a broken tar; "skip"
    leaves bad samples out and lists them in the entry's ``errors``, and packs the whole
    samples before the point where a tar breaks off (truncated download), recording it as the
    entry's ``damage``: [member, reason]. A tar unreadable from the start fails either way.
    ``subset`` (sorted image ids): pack only those images; the entry counts the others.
    Samples packed with a doubt (source.checks) are listed in the entry's ``warnings``; masks
    given as uncompressed RLE are counted in ``converted``.
    """
    if on_error not in ON_ERROR:
        raise ConfigError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    name = shard_name(index)
    with storage.staging(name) as folder:
        result = _fill_part(
            os.fspath(tar_path), name, folder, progress, image_longest, on_error, subset
        )
        result.entry.update(storage.publish(folder, name))
    return result


class _Shard:
    """What one pass over a shard collects; bad samples go to the error policy, not to except."""

    def __init__(
        self,
        shard: str,
        tmp: Path,
        on_error: str,
        image_longest: int | None,
        subset: np.ndarray | None,
    ) -> None:
        self.shard, self.on_error, self.image_longest = shard, on_error, image_longest
        self.subset, self.outside_subset = subset, 0
        self.jpeg_file = PayloadFile(tmp / JPEG_PAYLOAD)
        self.counts_file = PayloadFile(tmp / COUNTS_PAYLOAD)
        self.resized_file = PayloadFile(tmp / RESIZED_PAYLOAD)
        self.jpegs: dict[str, JpegRecord] = {}
        self.jsons: dict[str, JsonRecord] = {}
        self.skipped: list[tuple[str, str]] = []  # strays and unpaired members
        self.errors: list[tuple[str, str]] = []  # bad samples left out (on_error="skip")
        self.poisoned: set[str] = set()  # keys with a bad or duplicate member

    def bad(self, member: str, reason: str, key: str | None = None) -> None:
        """A bad sample: fail the shard, or record it and leave the sample out."""
        if self.on_error == "fail":
            raise ShardError(self.shard, member, reason)
        self.errors.append((member, reason))
        if key is not None:
            self.poisoned.add(key)

    def add(self, member: Member) -> None:
        if member.kind is None:
            self.skipped.append((member.name, member.reason or "stray member"))
            return
        assert member.key is not None and member.data is not None
        if self.subset is not None and not _holds(self.subset, int(member.key[3:])):
            self.outside_subset += member.kind == "json"  # not read further, not written
            return
        seen = self.jpegs if member.kind == "jpg" else self.jsons
        if member.key in seen:
            self.bad(member.name, f"duplicate member (also {seen[member.key].member})", member.key)
            return
        try:
            if member.kind == "jpg":
                self.jpegs[member.key] = self._jpeg(member.name, member.data)
            else:
                self.jsons[member.key] = self._json(member.key, member.name, member.data)
        except (ValueError, OverflowError) as exc:
            self.bad(member.name, str(exc), member.key)

    def _jpeg(self, name: str, data: bytes) -> JpegRecord:
        width, height = _jpeg_size(data)
        small = b""
        if self.image_longest:
            pixels = resize_longest(data, height, width, self.image_longest)
            small = encode_jpeg(pixels, RESIZED_QUALITY)
        jpeg = JpegRecord(name, self.jpeg_file.append(data), len(data), width, height)
        if small:
            where = self.resized_file.append(small)
            jpeg.resized = (where, len(small), pixels.shape[1], pixels.shape[0])
        return jpeg

    def _json(self, key: str, name: str, data: bytes) -> JsonRecord:
        ann = parse_annotation_json(data)
        if f"sa_{ann.image_id}" != key:
            raise AnnotationError(f"image.image_id {ann.image_id} does not match the member name")
        start = self.counts_file.append(ann.counts_data)
        offsets = (start + np.cumsum(ann.counts_sizes) - ann.counts_sizes).astype(np.uint64)
        return JsonRecord(name, ann, offsets)

    def payloads(self) -> dict[str, PayloadFile]:
        return {
            JPEG_PAYLOAD: self.jpeg_file,
            COUNTS_PAYLOAD: self.counts_file,
            RESIZED_PAYLOAD: self.resized_file,
        }

    def close(self, syncer: Syncer) -> None:
        """Stop writing payloads and hand them to ``syncer`` to be made durable."""
        syncer.sync([p.file for p in self.payloads().values()])

    def samples(self) -> list[str]:
        """Keys of complete, consistent samples in image-id order; the rest reported."""
        jpegs, jsons = self.jpegs, self.jsons
        for key in sorted(jpegs.keys() - jsons.keys() - self.poisoned):
            self.skipped.append((jpegs[key].member, "JPEG without its JSON"))
        for key in sorted(jsons.keys() - jpegs.keys() - self.poisoned):
            self.skipped.append((jsons[key].member, "JSON without its JPEG"))
        order = []
        for key in sorted(jpegs.keys() & jsons.keys() - self.poisoned):
            jpeg, ann = jpegs[key], jsons[key].ann
            if (jpeg.width, jpeg.height) != (ann.width, ann.height):
                self.bad(
                    jsons[key].member,
                    f"image size {ann.width}x{ann.height} (w x h) disagrees with the JPEG "
                    f"header {jpeg.width}x{jpeg.height} of {jpeg.member}",
                )
                continue
            order.append(key)
        return sorted(order, key=lambda k: jsons[k].ann.image_id)


def _holds(ids: np.ndarray, image_id: int) -> bool:
    k = int(np.searchsorted(ids, image_id))
    return k < len(ids) and int(ids[k]) == image_id


def _fill_part(
    tar_path: str,
    name: str,
    tmp: Path,
    progress: Callable[[int], None] | None,
    image_longest: int | None,
    on_error: str,
    subset: np.ndarray | None,
) -> PartResult:
    shard = tar_path.rstrip("/").rsplit("/", 1)[-1]
    source = {"file": shard, **source_identity(tar_path)}  # before reading: what was packed
    collected = _Shard(shard, tmp, on_error, image_longest, subset)
    damage: TarDamage | None = None
    syncer = Syncer()
    try:
        try:
            for member in iter_members(tar_path, shard):
                crash_point("member")
                collected.add(member)
                if progress and member.kind == "json":
                    progress(1)
        except TarDamage as exc:
            if on_error == "fail" or not (collected.jpegs or collected.jsons):
                raise
            damage = exc  # keep the whole samples before the break, and say where it broke
        finally:
            collected.close(syncer)
        order = collected.samples()
        packed = [collected.jsons[k] for k in order]
        warnings = [(record.member, text) for record in packed for text in record.ann.warnings]
        images, annotations = build_tables(order, collected.jpegs, collected.jsons)
        for table, (parquet, arrow) in zip(
            (images, annotations), TABLE_FILES.values(), strict=True
        ):
            for path in write_table(table, tmp / parquet, tmp / arrow):
                syncer.sync([open(path, "rb")])  # closed by the syncer
    finally:
        syncer.wait()  # before anything is published or the staging folder is removed
    digests = {file: payload.digest() for file, payload in collected.payloads().items()}
    digests.update({f: file_digest(tmp / f) for f in PART_FILES if f not in digests})
    entry = {
        "index": int(name[3:]),
        "source": source,
        "images": images.num_rows,
        "masks": annotations.num_rows,
        "jpeg_bytes": collected.jpeg_file.size,
        "counts_bytes": collected.counts_file.size,
        "resized_bytes": collected.resized_file.size,
        "skipped_members": [list(s) for s in collected.skipped],
        "errors": [list(e) for e in collected.errors],
        "warnings": [list(w) for w in warnings],
        "converted": {"uncompressed_rle": sum(record.ann.converted for record in packed)},
        "files": {f: digests[f] for f in PART_FILES},
    }
    if damage is not None:
        entry["damage"] = [damage.member, damage.reason]
    if subset is not None:
        entry["outside_subset"] = collected.outside_subset
    ids = images.column("image_id").to_numpy()  # the tables are in image-id order
    if len(ids):
        entry["image_ids"] = [int(ids[0]), int(ids[-1])]
    return PartResult(entry, collected.skipped, collected.errors, ids, warnings)

"""verify: is a store exactly what its manifest says, and (with the tars) what the source says?

Per shard: every file's size and sha256 against the manifest; the tables against the format's
schema, the manifest counts and each other (Parquet == Arrow IPC); every offset inside its
payload; every mask string well-formed and summing to h * w; every JPEG header agreeing with
the table. With ``source``, a sample of images (or all) is compared with the tar: JPEG bytes
and the rebuilt annotation JSON, field for field. Each problem is one line naming shard and
file. Written once over the storage seam and the part protocol: local and remote alike.
"""

from __future__ import annotations

import os
import zlib

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import simplejpeg
from joblib import Parallel, delayed

from ..codec import rle as mask_codec
from ..errors import StoreError
from ..format.columns import SCHEMAS, TABLES
from ..format.files import FORMAT_VERSION, JPEG_PAYLOAD, PAYLOADS, TABLE_FILES
from ..progress import progress_bar
from ..source.shards import ShardError, iter_members, source_fs
from ..store.manifest import check_files, read_manifest, shard_names
from .parts import Columns, Part, check_spans, table_columns
from .reader import Store


def verify(
    store: str | os.PathLike,
    *,
    source: str | os.PathLike | None = None,
    sample: float = 1.0,
    jobs: int = 1,
    progress: bool = True,
) -> list[str]:
    """Problems found in the store (empty if none). ``sample`` is the share of images compared
    with the tars, chosen by a hash of the image id so repeated runs check the same ones."""
    try:
        names = shard_names(read_manifest(store))
    except StoreError as exc:
        return [str(exc)]
    runs = Parallel(n_jobs=max(1, jobs), return_as="generator")(
        delayed(verify_shard)(store, name, source, sample) for name in names
    )
    problems: list[str] = []
    bar = progress_bar(runs, total=len(names), desc="verify", unit="shard", enabled=progress)
    for found in bar:
        problems.extend(found)
    return problems


def verify_shard(
    url: str | os.PathLike, name: str, source: str | os.PathLike | None, sample: float
) -> list[str]:
    """Problems of one shard; stops at the first layer that fails (files, then contents)."""
    store = Store(url)
    entry = store.manifest["shards"][name]
    try:
        problems = check_files(store.storage, name, entry) or _check_attached(store, name, entry)
        if problems:
            return problems
        p = store.shards.index(name)
        problems = _check_tables(store, name, store.part(p))
    except StoreError as exc:
        return [f"{name}: {exc}"]
    if not problems and source is not None:
        problems = _check_source(store, p, os.fspath(source), sample)
    return problems


def _check_attached(store: Store, name: str, entry: dict) -> list[str]:
    """Each attached array's file: one row per image, of the dtype and shape the store says."""
    problems = []
    for array, record in entry.get("attached", {}).items():
        spec = store.manifest.get("attached", {}).get(array, {})
        if (record["dtype"], record["shape"]) != (spec.get("dtype"), spec.get("shape")):
            problems.append(f"{name}: {record['file']}: {record['dtype']} {record['shape']}, "
                            f"the store says {spec.get('dtype')} {spec.get('shape')}")  # fmt: skip
        row = np.dtype(record["dtype"]).itemsize * int(np.prod(record["shape"]))
        if entry["files"][record["file"]]["bytes"] != entry["images"] * row:
            problems.append(f"{name}: {record['file']}: not {entry['images']} rows of {row} bytes")
    return problems


def _read_tables(store: Store, name: str) -> tuple[dict[str, pa.Table], list[str]]:
    """Each table's Arrow IPC copy, and the problems of both copies against the format."""
    folder = store.storage.part_path(name, store.manifest["shards"][name])
    fs, tables, problems = store.storage.fs, {}, []
    for table, (parquet, arrow) in TABLE_FILES.items():
        with fs.open(f"{folder}/{arrow}", "rb") as f:
            tables[table] = pa.ipc.open_file(f).read_all()
        try:  # the full structural check readers skip on open (UTF-8, every offset)
            tables[table].validate(full=True)
        except pa.ArrowInvalid as exc:
            problems.append(f"{name}: {arrow}: invalid Arrow data ({exc})")
            continue
        with fs.open(f"{folder}/{parquet}", "rb") as f:
            analysis = pq.read_table(f)
        if not tables[table].schema.equals(SCHEMAS[table]):
            problems.append(f"{name}: {arrow}: schema is not format version {FORMAT_VERSION}'s")
        if not analysis.equals(tables[table]):
            problems.append(f"{name}: {parquet}: differs from its Arrow IPC copy")
    return tables, problems


def _check_tables(store: Store, name: str, part: Part) -> list[str]:
    entry = store.manifest["shards"][name]
    tables, problems = _read_tables(store, name)
    if problems:
        return problems
    columns = {t: table_columns(tables[t], TABLES[t]) for t in TABLES}
    check_spans(name, columns, {f: entry[key] for f, key in PAYLOADS.items()})
    images, masks = columns["images"], columns["annotations"]
    count = images["mask_count"]
    starts = np.concatenate([[0], np.cumsum(count, dtype=np.uint64)[:-1]])
    if len(starts) and not np.array_equal(images["mask_start"], starts[: len(count)]):
        problems.append(f"{name}: images: mask_start is not the running sum of mask_count")
    if int(count.sum()) != len(masks["id"]):
        problems.append(f"{name}: images: mask counts sum to {count.sum()}, "
                        f"annotations has {len(masks['id'])} rows")  # fmt: skip
        return problems
    return problems + _check_payloads(name, images, masks, part)


def _check_payloads(name: str, images: Columns, masks: Columns, part: Part) -> list[str]:
    """Every JPEG header against the table, every mask string well-formed."""
    problems = []
    data, offsets = part.strings(masks["counts_offset"], masks["counts_size"])
    for local, image_id in enumerate(images["image_id"].tolist()):
        h, w = int(images["height"][local]), int(images["width"][local])
        start, size = int(images["jpeg_offset"][local]), int(images["jpeg_size"][local])
        try:
            jh, jw, _, _ = simplejpeg.decode_jpeg_header(part.payload(JPEG_PAYLOAD, start, size))
        except ValueError as exc:
            problems.append(f"{name}: jpeg.bin: image {image_id}: unreadable JPEG header ({exc})")
            continue
        if (jh, jw) != (h, w):
            problems.append(f"{name}: jpeg.bin: image {image_id}: JPEG is {jw}x{jh}, table {w}x{h}")
        lo, n = int(images["mask_start"][local]), int(images["mask_count"][local])
        try:
            mask_codec.parse_strings(data, offsets[lo : lo + n],
                                     masks["counts_size"][lo : lo + n], h, w)  # fmt: skip
        except ValueError as exc:
            problems.append(f"{name}: counts.bin: image {image_id}: {exc}")
    return problems


def _chosen(image_id: int, share: float) -> bool:
    return share >= 1.0 or zlib.crc32(str(image_id).encode()) < share * 2**32


def _check_source(store: Store, p: int, source: str, share: float) -> list[str]:
    name = store.shards[p]
    tar = f"{source.rstrip('/')}/{name}.tar"
    fs, path = source_fs(tar)
    if not fs.isfile(path):
        return [f"{name}: source {tar} not found"]
    local = {int(i): k for k, i in enumerate(store.part(p).images["image_id"])}
    offset = store.part_start(p)
    problems, seen = [], set()
    try:
        for member in iter_members(tar, f"{name}.tar"):
            if member.kind is None:
                continue
            image_id = int(member.key[3:])
            if image_id not in local or not _chosen(image_id, share):
                continue
            s = store[offset + local[image_id]]
            seen.add((image_id, member.kind))
            if member.kind == "jpg" and bytes(s.jpeg) != member.data:
                problems.append(f"{name}: {member.name}: JPEG bytes differ from the store")
            if member.kind == "json" and s.document() != orjson.loads(member.data):
                problems.append(f"{name}: {member.name}: annotations differ from the store")
    except ShardError as exc:
        return [f"{name}: source: {exc}"]
    for image_id in local:
        for kind in ("jpg", "json"):
            if _chosen(image_id, share) and (image_id, kind) not in seen:
                problems.append(f"{name}: sa_{image_id}.{kind}: in the store, not in {name}.tar")
    return problems

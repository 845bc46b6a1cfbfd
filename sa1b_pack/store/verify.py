"""verify: is a store exactly what its manifest says, and (with the tars) what the source says?

Per shard: every file's size and sha256 against the manifest; the tables against the manifest
counts and against each other (Parquet == Arrow IPC); every offset inside its payload; every
mask string well-formed and summing to h * w; every JPEG header agreeing with the table.
With ``source``, a sample of images (or all) is compared with the tar: JPEG bytes and the
rebuilt annotation JSON, field for field. Each problem is one line naming shard and file.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import fsspec
import numpy as np
import orjson
import pyarrow.parquet as pq
import simplejpeg
from joblib import Parallel, delayed
from tqdm import tqdm

from ..codec import rle as mask_codec
from ..source.shards import ShardError, iter_members
from .format import ANNOTATIONS_PARQUET, IMAGES_PARQUET, PART_FILES, PARTS_DIR
from .manifest import StoreError, file_digest, read_manifest
from .reader import Store, source_document


def verify(
    root: str | os.PathLike,
    *,
    source: str | os.PathLike | None = None,
    sample: float = 1.0,
    jobs: int = 1,
    progress: bool = True,
) -> list[str]:
    """Problems found in the store (empty if none). ``sample`` is the share of images compared
    with the tars, chosen by a hash of the image id so repeated runs check the same ones."""
    try:
        manifest = read_manifest(root)
    except StoreError as exc:
        return [str(exc)]
    names = sorted(manifest["shards"], key=lambda n: manifest["shards"][n]["index"])
    runs = Parallel(n_jobs=max(1, jobs), return_as="generator")(
        delayed(verify_shard)(root, name, source, sample) for name in names
    )
    problems: list[str] = []
    for found in tqdm(runs, total=len(names), desc="verify", unit="shard", disable=not progress):
        problems.extend(found)
    return problems


def verify_shard(
    root: str | os.PathLike, name: str, source: str | os.PathLike | None, sample: float
) -> list[str]:
    """Problems of one shard; stops at the first layer that fails (files, then contents)."""
    entry = read_manifest(root)["shards"][name]
    fs, base = fsspec.core.url_to_fs(os.fspath(root))
    folder = f"{base}/{entry.get('path', f'{PARTS_DIR}/{name}')}"
    problems = _check_files(fs, folder, name, entry)
    if problems:
        return problems
    try:
        store = Store(root)
        part = store.part(store.shards.index(name))
        if not store.remote:  # the table layer reads the mapped part; remote: files + source
            problems = _check_tables(Path(folder), name, part)
    except StoreError as exc:
        return [f"{name}: {exc}"]
    if not problems and source is not None:
        problems = _check_source(store, name, os.fspath(source), sample)
    return problems


def _check_files(fs: fsspec.AbstractFileSystem, folder: str, name: str, entry: dict) -> list[str]:
    problems = []
    for f in PART_FILES:
        path = f"{folder}/{f}"
        want = entry["files"].get(f)
        if want is None:
            problems.append(f"{name}: {f}: not listed in the manifest")
        elif not fs.isfile(path):
            problems.append(f"{name}: {f}: missing")
        elif (size := fs.size(path)) != want["bytes"]:
            problems.append(f"{name}: {f}: {size} bytes, the manifest says {want['bytes']}")
        elif file_digest(path, fs)["sha256"] != want["sha256"]:
            problems.append(f"{name}: {f}: sha256 differs from the manifest (content changed)")
    return problems


def _check_tables(folder: Path, name: str, part) -> list[str]:
    problems = []
    for parquet, arrow in ((IMAGES_PARQUET, part.images), (ANNOTATIONS_PARQUET, part.annotations)):
        if not pq.read_table(folder / parquet).equals(arrow):
            problems.append(f"{name}: {parquet}: differs from its Arrow IPC copy")
    starts = np.concatenate([[0], np.cumsum(part.mask_count, dtype=np.uint64)[:-1]])
    if len(starts) and not np.array_equal(part.mask_start, starts[: len(part.mask_start)]):
        problems.append(f"{name}: images: mask_start is not the running sum of mask_count")
    if int(part.mask_count.sum()) != len(part.ids):
        problems.append(f"{name}: images: mask counts sum to {part.mask_count.sum()}, "
                        f"annotations has {len(part.ids)} rows")  # fmt: skip
    for local in range(len(part.image_id)):
        image_id, h, w = int(part.image_id[local]), int(part.height[local]), int(part.width[local])
        lo, n = int(part.mask_start[local]), int(part.mask_count[local])
        start, size = int(part.jpeg_offset[local]), int(part.jpeg_size[local])
        try:
            jh, jw, _, _ = simplejpeg.decode_jpeg_header(part.jpeg[start : start + size])
        except ValueError as exc:
            problems.append(f"{name}: jpeg.bin: image {image_id}: unreadable JPEG header ({exc})")
            continue
        if (jh, jw) != (h, w):
            problems.append(f"{name}: jpeg.bin: image {image_id}: JPEG is {jw}x{jh}, table {w}x{h}")
        try:
            mask_codec.parse_strings(
                part.counts, part.counts_offset[lo : lo + n], part.counts_size[lo : lo + n], h, w
            )
        except ValueError as exc:
            problems.append(f"{name}: counts.bin: image {image_id}: {exc}")
    return problems


def _chosen(image_id: int, share: float) -> bool:
    return share >= 1.0 or zlib.crc32(str(image_id).encode()) < share * 2**32


def _check_source(store: Store, name: str, source: str, share: float) -> list[str]:
    tar = f"{source.rstrip('/')}/{name}.tar"
    fs, path = fsspec.core.url_to_fs(tar)
    if not fs.isfile(path):
        return [f"{name}: source {tar} not found"]
    p = store.shards.index(name)
    part = store.part(p)
    local = {int(i): k for k, i in enumerate(part.image_id)}
    offset = int(store._spanner.starts[p])
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
            if member.kind == "json" and source_document(s) != orjson.loads(member.data):
                problems.append(f"{name}: {member.name}: annotations differ from the store")
    except ShardError as exc:
        return [f"{name}: source: {exc}"]
    for image_id in local:
        for kind in ("jpg", "json"):
            if _chosen(image_id, share) and (image_id, kind) not in seen:
                problems.append(f"{name}: sa_{image_id}.{kind}: in the store, not in {name}.tar")
    return problems

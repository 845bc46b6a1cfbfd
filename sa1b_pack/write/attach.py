"""Arrays attached to a packed store: one fixed-size row per image (a teacher's image embedding
for distillation, a depth map, a feature vector), read back beside the image and its masks.

Per part, one raw file ``attached/<name>-<id>.bin`` holds the rows in the part's image order
(row i at ``i * row bytes``): read memory-mapped locally and by one range request on object
storage. Why raw files and not zarr: docs/decisions/attached-arrays.md.

Written part by part under the store's writer lock: a part's rows go to a temp file (fsynced
and renamed locally, a new object on object storage) that a new manifest generation then
lists, with its sha256; so a killed attach keeps the parts it committed and the next run
does the rest, and ``verify`` checks the files like any other. Nothing is overwritten:
``detach`` commits a manifest without the name, then removes its files.
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, StoreError
from ..format.files import ATTACHED_DIR, ATTACHED_NAME
from ..progress import progress_bar
from ..read.reader import Sample, Store
from ..storage import Storage, storage_for
from ..storage.faults import crash_point
from ..store.manifest import read_manifest, settle_manifest, write_manifest

Fn = Callable[[Sample], "np.ndarray | None"]
SHOWN = 10  # missing images named in an error, before "... and N more"


@dataclass
class AttachReport:
    """What an attach run did: shards written now or already holding the array, and the
    images that had none (zero-filled, recorded in the manifest)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    attached: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    missing: list[int] = field(default_factory=list)


def attach(
    store: str | os.PathLike | Store | Storage,
    name: str,
    fn: Fn,
    *,
    jobs: int = 1,
    allow_missing: bool = False,
    progress: bool = True,
) -> AttachReport:
    """Attach ``fn(sample)`` of every image as array ``name``: one dtype and shape for all.

    ``fn`` runs on ``jobs`` threads of this process (no pickling: a model can be shared;
    numpy, torch and file reads release the GIL). ``fn`` returning None means the image has
    no array: an error, or with ``allow_missing`` a zero row recorded as missing. Shards
    that already hold ``name`` are kept (resume); to recompute, ``detach`` first.
    """
    storage = _storage(store)
    if not re.fullmatch(ATTACHED_NAME, name):
        raise ConfigError(f"attached name {name!r}: use letters, digits and _, starting with "
                         "a letter (it becomes a file name and a batch key)")  # fmt: skip
    with storage.writer_lock():
        reader = Store(storage)
        manifest = reader.manifest
        for shard, entry in manifest["shards"].items():  # what a killed run left
            storage.drop_unlisted_files(shard, entry)
        todo = [p for p, s in enumerate(reader.shards)
                if name not in manifest["shards"][s].get("attached", {})]  # fmt: skip
        spec, first = manifest.get("attached", {}).get(name), None
        if spec is None and todo:
            spec, first = _probe(reader, todo, fn)
        report = AttachReport(name, spec["dtype"] if spec else "", tuple(spec["shape"]) if spec
                              else (), already=[s for s in reader.shards if s not in
                              {reader.shards[p] for p in todo}])  # fmt: skip
        total = sum(manifest["shards"][reader.shards[p]]["images"] for p in todo)
        with (
            ThreadPoolExecutor(max(1, jobs), thread_name_prefix="sa1b-attach") as pool,
            progress_bar(total=total, desc=f"attach {name}", unit="img", enabled=progress) as bar,
        ):
            for p in todo:
                shard = reader.shards[p]
                entry = manifest["shards"][shard]
                rows = _computed(pool, reader, p, fn, max(1, jobs), first)
                record, digest, missing = _write_part(storage, shard, entry, name, spec, rows, bar)
                if missing and not allow_missing:  # the file is never listed: dropped next run
                    raise ConfigError(_missing_message(name, missing, f"of {shard} have no array"))
                entry["files"][record["file"]] = digest
                entry.setdefault("attached", {})[name] = {**record, "missing": missing}
                manifest.setdefault("attached", {})[name] = spec
                write_manifest(storage, manifest, changed=[shard])
                crash_point("attach-committed")
                report.attached.append(shard)
                report.missing += missing
        settle_manifest(storage, manifest)
    return report


def attach_dir(
    store: str | os.PathLike | Store | Storage,
    name: str,
    folder: str | os.PathLike,
    *,
    allow_missing: bool = False,
    jobs: int = 1,
    progress: bool = True,
) -> AttachReport:
    """Attach ``<folder>/<image_id>.npy`` of every image as ``name``. Images without a file
    fail the run before anything is written (naming them), unless ``allow_missing``: then
    they get zero rows and are listed in the manifest (``Sample.attached_present``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder of <image_id>.npy files")
    present = {e.name for e in os.scandir(folder) if e.name.endswith(".npy")}
    reader = Store(_storage(store))
    ids = [int(i) for p in range(len(reader.shards)) for i in reader.part(p).images["image_id"]]
    missing = [i for i in ids if f"{i}.npy" not in present]
    if missing and not allow_missing:
        detail = f"(of {len(ids):,}) have no <image_id>.npy in {folder}"
        raise ConfigError(_missing_message(name, missing, detail))

    def load(sample: Sample) -> np.ndarray | None:
        path = folder / f"{sample.image_id}.npy"
        return np.load(path, allow_pickle=False) if path.name in present else None

    return attach(reader.storage, name, load, jobs=jobs, allow_missing=allow_missing,
                  progress=progress)  # fmt: skip


def detach(store: str | os.PathLike | Store | Storage, name: str) -> list[str]:
    """Remove array ``name``: a manifest without it is committed, then its files deleted.
    Returns the shards that held it; ValueError if none did."""
    storage = _storage(store)
    with storage.writer_lock():
        manifest = read_manifest(storage)
        held = []
        for shard, entry in manifest["shards"].items():
            record = entry.get("attached", {}).pop(name, None)
            if record is not None:
                entry["files"].pop(record["file"], None)
                held.append(shard)
            if "attached" in entry and not entry["attached"]:
                del entry["attached"]
        known = manifest.get("attached", {})
        if name not in known and not held:
            have = ", ".join(sorted(known)) or "none"
            raise StoreError(f"{storage.url} has no attached array {name!r} (attached: {have})")
        known.pop(name, None)
        if not known:
            manifest.pop("attached", None)
        write_manifest(storage, manifest)
        for shard, entry in manifest["shards"].items():
            storage.drop_unlisted_files(shard, entry)
    return sorted(held)


def attached_specs(store: Store, names: Iterable[str]) -> dict[str, tuple[np.dtype, tuple]]:
    """dtype and shape of each named attached array; ValueError unless every shard of the
    store holds it (a shard packed after the attach needs the attach run again)."""
    known = store.manifest.get("attached", {})
    out = {}
    for name in names:
        lacking = [s for s in store.shards if name not in
                   store.manifest["shards"][s].get("attached", {})]  # fmt: skip
        if name not in known or lacking:
            have = ", ".join(sorted(known)) or "none"
            raise StoreError(f"{store.url}: array {name!r} is not attached to every shard "
                             f"(attached: {have}; lacking it: {lacking[:5]}); run sa1b-pack "
                             "attach")  # fmt: skip
        out[name] = (np.dtype(known[name]["dtype"]), tuple(known[name]["shape"]))
    return out


def _storage(store: str | os.PathLike | Store | Storage) -> Storage:
    return store.storage if isinstance(store, Store) else storage_for(store)


def _missing_message(name: str, missing: list[int], where: str) -> str:
    shown = ", ".join(f"{i}" for i in missing[:SHOWN])
    more = f" and {len(missing) - SHOWN:,} more" if len(missing) > SHOWN else ""
    return (f"attach {name}: {len(missing):,} images {where}: image ids "
            f"{shown}{more}; allow_missing (--allow-missing) attaches zeros for them and "
            "records them in the manifest")  # fmt: skip


def _spec(array: Any, where: str) -> dict[str, Any]:
    array = np.asarray(array)
    if array.dtype.kind not in "biufc":
        raise ConfigError(f"{where}: attached arrays must be numeric, got dtype {array.dtype}")
    dtype = array.dtype.newbyteorder("<")  # stored little-endian, whatever the machine
    return {"dtype": dtype.str, "shape": list(array.shape), "nbytes": array.nbytes}


def _probe(reader: Store, todo: list[int], fn: Fn) -> tuple[dict[str, Any], tuple]:
    """The new array's dtype and shape: from the first image ``fn`` gives one for (kept, so
    it is not computed twice)."""
    for p in todo:
        start = reader.part_start(p)
        for i in range(start, start + int(reader.part_sizes[p])):
            sample = reader[i]
            array = fn(sample)
            if array is not None:
                return _spec(array, f"image {sample.image_id}"), (i, array)
    raise ConfigError("no image has an array to attach: every one is missing")


def _computed(
    pool: ThreadPoolExecutor, reader: Store, p: int, fn: Fn, jobs: int, first: tuple | None
) -> Iterator[tuple[int, np.ndarray | None]]:
    """(image id, fn's array or None) of part ``p``'s images in order, ``fn`` running on the
    pool with at most ``2 * jobs`` results waiting to be written."""
    start = reader.part_start(p)
    pending: deque[tuple[int, Future]] = deque()
    for i in range(start, start + int(reader.part_sizes[p])):
        sample = reader[i]
        if first is not None and first[0] == i:
            done: Future = Future()
            done.set_result(first[1])
            pending.append((sample.image_id, done))
        else:
            pending.append((sample.image_id, pool.submit(fn, sample)))
        if len(pending) > 2 * jobs:
            yield _result(*pending.popleft())
    while pending:
        yield _result(*pending.popleft())


def _result(image_id: int, future: Future) -> tuple[int, np.ndarray | None]:
    try:
        return image_id, future.result()
    except Exception as exc:
        raise RuntimeError(f"attach: image {image_id}: {type(exc).__name__}: {exc}") from exc


def _write_part(
    storage: Storage,
    shard: str,
    entry: dict[str, Any],
    name: str,
    spec: dict[str, Any],
    rows: Iterator[tuple[int, np.ndarray | None]],
    bar: Any,
) -> tuple[dict[str, Any], dict[str, Any], list[int]]:
    """Write a part's rows to a new file, durable once this returns: its manifest record
    (file, dtype, shape), its size and sha256, the image ids that had no array (zero rows)."""
    dtype, shape = np.dtype(spec["dtype"]), tuple(spec["shape"])
    zeros = np.zeros(shape, dtype)
    file = f"{ATTACHED_DIR}/{name}-{uuid.uuid4().hex[:8]}.bin"
    digest, size, missing = hashlib.sha256(), 0, []
    with storage.add_file(shard, entry, file) as tmp:
        with open(tmp, "wb") as f:
            for image_id, array in rows:
                if array is None:
                    missing.append(image_id)
                    array = zeros
                array = np.asarray(array)
                if array.shape != shape or array.dtype.newbyteorder("<") != dtype:
                    raise ConfigError(
                        f"attach {name}: image {image_id} ({shard}) gave {array.dtype} "
                        f"{array.shape}; the array is {dtype} {shape} for every image"
                    )
                row = np.ascontiguousarray(array, dtype=dtype)
                f.write(row.data)
                digest.update(row.data)
                size += row.nbytes
                bar.update(1)
    record = {"file": file, "dtype": spec["dtype"], "shape": spec["shape"]}
    return record, {"bytes": size, "sha256": digest.hexdigest()}, missing

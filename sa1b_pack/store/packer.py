"""The packer: many shards -> one store, in parallel, resumable, committing shard by shard.

Each shard is one unit of work (``part.write_part``) run by joblib; this process alone owns
the manifest and lists each part the moment it is complete. Re-running over the same range
skips committed shards, drops uncommitted leftovers of a killed run, and packs the rest.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from joblib import Parallel, delayed
from tqdm import tqdm

from ..source.shards import ShardError, find_shards, shard_name
from .cluster import backend_context
from .format import PART_FILES, PARTS_DIR
from .manifest import (
    StoreError,
    empty_manifest,
    read_manifest,
    write_manifest,
    writer_lock,
)
from .remote import drop_unlisted_parts, is_remote, upload_part
from .writer import ON_ERROR, PartResult, write_part


@dataclass
class PackReport:
    """What a pack run did: shards packed now, already there, failed; members left out."""

    packed: list[str] = field(default_factory=list)
    skipped_existing: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # shard -> error message
    skipped_members: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    errors: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # bad samples skipped
    images: int = 0
    masks: int = 0

    @property
    def ok(self) -> bool:
        return not self.failed


def _open_or_create(dst: Path | str, image_longest: int | None) -> dict[str, Any]:
    try:
        manifest = read_manifest(dst)
    except StoreError:
        if not is_remote(dst) and (Path(dst) / "manifest.json").exists():
            raise
        return empty_manifest(image_longest)
    if manifest["shards"] and manifest.get("image_longest") != image_longest:
        raise StoreError(
            f"{dst} was packed with image_longest={manifest.get('image_longest')}; pack the "
            f"rest the same way (--image-longest), or into a new store"
        )
    return {**manifest, **empty_manifest(image_longest), "shards": manifest["shards"]}


def _is_committed(dst: Path, name: str, entry: dict[str, Any]) -> bool:
    part = dst / PARTS_DIR / name
    return all(
        (part / f).is_file() and (part / f).stat().st_size == entry["files"][f]["bytes"]
        for f in PART_FILES
    )


def _drop_leftovers(dst: Path, committed: set[str]) -> None:
    """Remove temp folders and unlisted parts left by a killed run (we hold the lock)."""
    parts = dst / PARTS_DIR
    if not parts.is_dir():
        return
    for path in parts.iterdir():
        if path.name not in committed:
            shutil.rmtree(path, ignore_errors=True)


def _pack_one(
    tar: str,
    index: int,
    dst: Path | str,
    progress: Any | None,
    image_longest: int | None,
    on_error: str,
) -> tuple[int, PartResult | None, str | None]:
    """Worker entry point: a ShardError becomes a result, so other shards go on.

    For a remote store the part is written to local scratch, then uploaded under its own
    prefix; the coordinator commits it by writing the next manifest generation.
    """
    report: Callable[[int], None] | None = progress.put if progress is not None else None
    try:
        if not is_remote(dst):
            return index, write_part(tar, index, dst, report, image_longest, on_error), None
        with tempfile.TemporaryDirectory(prefix="sa1b-part-") as scratch:
            result = write_part(tar, index, scratch, report, image_longest, on_error)
            name = shard_name(index)
            result.entry["path"] = upload_part(Path(scratch) / PARTS_DIR / name, dst, name)
            return index, result, None
    except ShardError as exc:
        return index, None, str(exc)


def _record(
    name: str,
    result: PartResult | None,
    error: str | None,
    dst: Path,
    manifest: dict[str, Any],
    report: PackReport,
) -> None:
    """Commit a finished shard (list it in the manifest) or record why it failed."""
    if error is not None:
        report.failed[name] = error
        tqdm.write(f"FAILED {error}", file=sys.stderr)
        return
    assert result is not None
    manifest["shards"][name] = result.entry
    write_manifest(dst, manifest)
    report.packed.append(name)
    report.images += result.entry["images"]
    report.masks += result.entry["masks"]
    if result.errors:
        report.errors[name] = result.errors
    if result.skipped:
        report.skipped_members[name] = result.skipped
    for label, items in (("skipped", result.errors), ("left out", result.skipped)):
        for member, reason in items:
            tqdm.write(f"{label} {name}: {member}: {reason}", file=sys.stderr)


def _drain(queue: Any, bar: tqdm) -> None:
    while (n := queue.get()) is not None:
        bar.update(n)


def pack(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    shards: list[int],
    *,
    jobs: int = 1,
    progress: bool = True,
    image_longest: int | None = None,
    on_error: str = "fail",
    backend: str = "loky",
    scheduler: str | None = None,
) -> PackReport:
    """Pack shards ``sa_NNNNNN.tar`` of ``src`` into store ``dst``, committing each as it ends.

    ``image_longest`` also keeps every image pre-resized to that longest side (see part.py);
    a store keeps one setting for all its shards. ``on_error="fail"`` (default) fails a shard
    at its first bad sample, leaving nothing of it, while other shards go on; "skip" packs the
    rest and records bad samples in the manifest (``Store.errors()``). ``backend="dask"``
    runs the same per-shard function on a Dask cluster (``scheduler`` address, or the current
    client); ``jobs`` then defaults to every worker.
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    remote = is_remote(dst)
    dst = os.fspath(dst) if remote else Path(dst)
    tars = find_shards(src, shards)
    if not remote:
        dst.mkdir(parents=True, exist_ok=True)
    report = PackReport()
    with nullcontext() if remote else writer_lock(dst):
        manifest = _open_or_create(dst, image_longest)
        listed = manifest["shards"]
        if remote:
            committed = set(listed)
            drop_unlisted_parts(dst, manifest)
        else:
            committed = {n for n, e in listed.items() if _is_committed(dst, n, e)}
            if committed != set(listed):
                broken = sorted(set(listed) - committed)
                raise StoreError(f"{dst}: committed shards with missing or resized files: {broken}")
            _drop_leftovers(dst, committed)
        if not listed:
            write_manifest(dst, manifest)
        todo = []
        for index in shards:
            if shard_name(index) in committed:
                report.skipped_existing.append(shard_name(index))
            else:
                todo.append(index)
        distributed = backend != "loky"
        jobs = -1 if distributed else max(1, min(jobs, len(todo) or 1))
        shard_bar = tqdm(total=len(todo), desc="shards", unit="shard", disable=not progress)
        image_bar = tqdm(desc="images", unit="img", disable=not progress)
        queue, drainer, manager = None, None, None
        if progress and not distributed:  # a cluster reports whole shards only
            if jobs > 1:
                import multiprocessing

                manager = multiprocessing.Manager()
                queue = manager.Queue()
            else:
                import queue as queue_module

                queue = queue_module.SimpleQueue()
            drainer = threading.Thread(target=_drain, args=(queue, image_bar), daemon=True)
            drainer.start()
        try:
            with backend_context(backend, scheduler):
                runs = Parallel(n_jobs=jobs, return_as="generator_unordered")(
                    delayed(_pack_one)(tars[i], i, dst, queue, image_longest, on_error)
                    for i in todo
                )
                for index, result, error in runs:
                    _record(shard_name(index), result, error, dst, manifest, report)
                    shard_bar.update(1)
        finally:
            if queue is not None:
                queue.put(None)
                drainer.join()
            if manager is not None:
                manager.shutdown()
            shard_bar.close()
            image_bar.close()
    return report

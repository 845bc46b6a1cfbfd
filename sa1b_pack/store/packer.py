"""The packer: many shards -> one store, in parallel, resumable, committing shard by shard.

A ``Packer`` opens the store once (writer lock, manifest, clean-up of what a killed run
left), keeps one worker pool, and commits each shard the moment its part is published; it can
be fed shards in any number of calls (``fetch --pack`` hands it each tar as it lands). Each
shard is one unit of work (``writer.write_part``) run by joblib, locally or on Dask; this
process alone owns the manifest. ``pack()`` is one Packer over one range of shards.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from joblib import Parallel, delayed
from tqdm import tqdm

from ..progress import progress_bar, say
from ..source.shards import ShardError, find_shards, shard_name
from .cluster import backend_context
from .errors import StoreError
from .manifest import empty_manifest, read_manifest, write_manifest
from .storage import Storage, storage_for
from .writer import ON_ERROR, PartResult, write_part


@dataclass
class PackReport:
    """What a pack run did: shards packed now, already there, failed; members left out."""

    packed: list[str] = field(default_factory=list)
    skipped_existing: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # shard -> error message
    skipped_members: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    errors: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # bad samples skipped
    warnings: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # packed, doubtful
    images: int = 0
    masks: int = 0

    @property
    def ok(self) -> bool:
        return not self.failed


def _pack_one(
    tar: str,
    index: int,
    storage: Storage,
    progress: Any | None,
    image_longest: int | None,
    on_error: str,
) -> tuple[int, PartResult | None, str | None]:
    """Worker entry point: a ShardError becomes a result, so other shards go on."""
    report: Callable[[int], None] | None = progress.put if progress is not None else None
    try:
        return index, write_part(tar, index, storage, report, image_longest, on_error), None
    except ShardError as exc:
        return index, None, str(exc)


def _drain(queue: Any, bar: tqdm) -> None:
    while (n := queue.get()) is not None:
        bar.update(n)


class Packer:
    """A store open for packing: ``with Packer(dst) as p: p.pack(tars)``, any number
    of times. Options as for ``pack()``; they hold for the Packer's whole life."""

    def __init__(
        self,
        dst: str | os.PathLike,
        *,
        jobs: int = 1,
        progress: bool = True,
        image_longest: int | None = None,
        on_error: str = "fail",
        backend: str = "loky",
        scheduler: str | None = None,
    ) -> None:
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        self.storage = storage_for(dst)
        self.image_longest, self.on_error = image_longest, on_error
        self.backend, self.scheduler, self.progress = backend, scheduler, progress
        self.distributed = backend != "loky"
        self.jobs = -1 if self.distributed else max(1, jobs)
        self._stack = ExitStack()
        self.manifest: dict[str, Any] = {}

    def __enter__(self) -> Packer:
        stack = self._stack
        try:
            stack.enter_context(self.storage.writer_lock())
            self.manifest = self._open_manifest()
            shards = self.manifest["shards"]
            if broken := self.storage.broken_parts(shards):
                raise StoreError(
                    f"{self.storage.url}: committed shards with missing or resized files: {broken}"
                )
            self.storage.drop_unlisted(shards)
            if not shards:
                write_manifest(self.storage, self.manifest)
            stack.enter_context(backend_context(self.backend, self.scheduler))
            self._parallel = stack.enter_context(
                Parallel(n_jobs=self.jobs, return_as="generator_unordered")
            )
            self._images = stack.enter_context(
                progress_bar(desc="images", unit="img", enabled=self.progress)
            )
            self._queue = self._image_queue(stack)
        except BaseException:
            stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _open_manifest(self) -> dict[str, Any]:
        if self.storage.load_manifest() is None:
            return empty_manifest(self.image_longest)
        manifest = read_manifest(self.storage)  # StoreError if corrupt: never overwritten
        if manifest["shards"] and manifest.get("image_longest") != self.image_longest:
            raise StoreError(
                f"{self.storage.url} was packed with image_longest="
                f"{manifest.get('image_longest')}; pack the rest the same way "
                f"(--image-longest), or into a new store"
            )
        return {**manifest, **empty_manifest(self.image_longest), "shards": manifest["shards"]}

    def _image_queue(self, stack: ExitStack) -> Any:
        """Where workers report images as they go, drained into the images bar by a thread;
        None without a bar, or on a cluster (which reports whole shards only)."""
        if not self.progress or self.distributed:
            return None
        if self.jobs > 1:
            import multiprocessing

            manager = stack.enter_context(multiprocessing.Manager())
            queue = manager.Queue()
        else:
            import queue as queue_module

            queue = queue_module.SimpleQueue()
        drainer = threading.Thread(target=_drain, args=(queue, self._images), daemon=True)
        drainer.start()
        stack.callback(drainer.join)
        stack.callback(queue.put, None)
        return queue

    @property
    def committed(self) -> set[str]:
        return set(self.manifest["shards"])

    def pack(self, tars: Mapping[int, str]) -> PackReport:
        """Pack the shards {index: tar path or URL} not yet committed, committing each as it
        finishes (``source.shards.find_shards`` locates them in a folder)."""
        report = PackReport()
        todo = []
        for index in tars:
            if shard_name(index) in self.committed:
                report.skipped_existing.append(shard_name(index))
            else:
                todo.append(index)
        args = (self.storage, self._queue, self.image_longest, self.on_error)
        with progress_bar(
            total=len(todo), desc="shards", unit="shard", enabled=self.progress
        ) as bar:
            for index, result, error in self._parallel(
                delayed(_pack_one)(tars[i], i, *args) for i in todo
            ):
                self._record(shard_name(index), result, error, report)
                bar.update(1)
        return report

    def _record(
        self, name: str, result: PartResult | None, error: str | None, report: PackReport
    ) -> None:
        """Commit a finished shard (list it in the manifest) or record why it failed."""
        if error is not None:
            report.failed[name] = error
            say(f"FAILED {error}")
            return
        assert result is not None
        self.manifest["shards"][name] = result.entry
        write_manifest(self.storage, self.manifest)
        report.packed.append(name)
        report.images += result.entry["images"]
        report.masks += result.entry["masks"]
        if result.errors:
            report.errors[name] = result.errors
        if result.skipped:
            report.skipped_members[name] = result.skipped
        if result.warnings:
            report.warnings[name] = result.warnings
        labelled = (("skipped", result.errors), ("left out", result.skipped),
                    ("warning", result.warnings))  # fmt: skip
        for label, items in labelled:
            for member, reason in items:
                say(f"{label} {name}: {member}: {reason}")


def pack(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    shards: list[int],
    **options: Any,
) -> PackReport:
    """Pack shards ``sa_NNNNNN.tar`` of ``src`` into store ``dst``, committing each as it ends.

    Options (``Packer``): ``jobs`` shards in parallel; ``progress`` bars; ``image_longest``
    also keeps every image pre-resized to that longest side (a store keeps one setting for
    all its shards); ``on_error="fail"`` (default) fails a shard at its first bad sample,
    leaving nothing of it, while other shards go on, and "skip" packs the rest and records
    bad samples in the manifest (``Store.errors()``); ``backend="dask"`` runs the same
    per-shard function on a Dask cluster (``scheduler`` address, or the current client).
    """
    tars = find_shards(src, shards)  # missing shards: an error before the store is touched
    with Packer(dst, **options) as packer:
        return packer.pack(tars)

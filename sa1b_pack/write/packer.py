"""The packer: many shards -> one store, in parallel, resumable, committing shard by shard.

A ``Packer`` opens the store once (writer lock, manifest, clean-up of what a killed run
left), keeps one worker pool, and commits each shard the moment its part is published; it can
be fed shards in any number of calls (``fetch --pack`` hands it each tar as it lands). Each
shard is one unit of work (``writer.write_part``) run by joblib, locally or on Dask; this
process alone owns the manifest. ``pack()`` is one Packer over one range of shards.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from joblib import Parallel, delayed

from ..errors import ConfigError, StoreError
from ..progress import progress_bar, say, worker_progress
from ..source.identity import source_change
from ..source.shards import ShardError, find_shards, shard_name
from ..storage import Storage, storage_for
from ..store.manifest import empty_manifest, read_manifest, settle_manifest, write_manifest
from ..store.subset import describe, read_ids
from .cluster import backend_context
from .duplicates import duplicate_ids
from .writer import ON_ERROR, PartResult, write_part


@dataclass
class PackReport:
    """What a pack run did: shards packed now, already there, failed; members left out."""

    packed: list[str] = field(default_factory=list)
    skipped_existing: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # shard -> error message
    changed: dict[str, str] = field(default_factory=dict)  # committed, source since replaced
    damaged: dict[str, list[str]] = field(default_factory=dict)  # [member, reason] of the break
    duplicates: dict[str, list[Any]] = field(default_factory=dict)  # shard -> ids also elsewhere
    skipped_members: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    errors: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # bad samples skipped
    warnings: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # packed, doubtful
    images: int = 0
    masks: int = 0

    @property
    def ok(self) -> bool:
        return not self.failed and not self.changed


def _pack_one(
    tar: str,
    index: int,
    storage: Storage,
    progress: Any | None,
    image_longest: int | None,
    on_error: str,
    subset: np.ndarray | None,
) -> tuple[int, PartResult | None, str | None]:
    """Worker entry point: a ShardError becomes a result, so other shards go on."""
    report: Callable[[int], None] | None = progress.put if progress is not None else None
    try:
        part = write_part(tar, index, storage, report, image_longest, on_error, subset)
        return index, part, None
    except ShardError as exc:
        return index, None, str(exc)


class Packer:
    """A store open for packing: ``with Packer(store) as p: p.pack(tars)``, any number
    of times. Keywords as for ``pack()``; they hold for the Packer's whole life."""

    def __init__(
        self,
        store: str | os.PathLike,
        *,
        jobs: int = 1,
        progress: bool = True,
        image_longest: int | None = None,
        on_error: str = "fail",
        backend: str = "loky",
        scheduler: str | None = None,
        repack: bool = False,
        subset: str | os.PathLike | Iterable[int | str] | None = None,
    ) -> None:
        if on_error not in ON_ERROR:
            raise ConfigError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        self.storage = storage_for(store)
        self.image_longest, self.on_error = image_longest, on_error
        self.backend, self.scheduler, self.progress = backend, scheduler, progress
        self.repack = repack
        self.subset = read_ids(subset) if subset is not None else None
        named = subset if isinstance(subset, str | os.PathLike) else "image ids"
        self.subset_record = describe(named, self.subset) if self.subset is not None else None
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
            # images reported as workers go; none on a cluster (it reports whole shards)
            self._queue = None
            if self.progress and not self.distributed:
                self._queue = worker_progress(stack, self._images, processes=self.jobs > 1)
        except BaseException:
            stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        with self._stack:  # the writer lock is held until the store is back at rest
            if exc[0] is None and self.manifest:
                settle_manifest(self.storage, self.manifest)

    def _open_manifest(self) -> dict[str, Any]:
        """The store's manifest, or a new one; a store keeps one image_longest and one
        subset for all its shards."""
        fresh = {**empty_manifest(self.image_longest), "subset": self.subset_record}
        if self.storage.load_manifest() is None:
            return fresh
        manifest = read_manifest(self.storage)  # StoreError if corrupt: never overwritten
        if manifest["shards"] and manifest.get("image_longest") != self.image_longest:
            raise StoreError(
                f"{self.storage.url} was packed with image_longest="
                f"{manifest.get('image_longest')}; pack the rest the same way "
                f"(--image-longest), or into a new store"
            )
        was, now = manifest.get("subset"), self.subset_record
        if manifest["shards"] and (was and was["sha256"]) != (now and now["sha256"]):
            packed = f"the subset {was['file']} ({was['images']:,} ids)" if was else "no subset"
            raise StoreError(
                f"{self.storage.url} was packed with {packed}; pack the rest the same way "
                "(--subset), or into a new store"
            )
        return {**manifest, **fresh, "shards": manifest["shards"]}

    @property
    def committed(self) -> set[str]:
        return set(self.manifest["shards"])

    def pack(self, tars: Mapping[int, str]) -> PackReport:
        """Pack the shards {index: tar path or URL} not yet committed, committing each as it
        finishes (``source.shards.find_shards`` locates them in a folder). A committed shard
        whose tar has changed since is packed again if it was damaged or had bad samples (a
        fresh download is the fix), or with ``repack``; otherwise it is reported in
        ``changed`` and left as it is."""
        report = PackReport()
        todo = []
        for index in tars:
            name = shard_name(index)
            entry = self.manifest["shards"].get(name)
            if entry is None:
                todo.append(index)
            elif (change := source_change(entry["source"], tars[index])) is None:
                report.skipped_existing.append(name)
            elif self.repack or entry.get("damage") or entry.get("errors"):
                say(f"re-packing {name}: its tar changed ({change})")
                todo.append(index)
            else:
                report.changed[name] = (
                    f"{name}.tar changed since it was packed ({change}); the store keeps the "
                    "old contents: pack with --repack to replace them"
                )
                say(f"CHANGED {report.changed[name]}")
        args = (self.storage, self._queue, self.image_longest, self.on_error, self.subset)
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
        """Commit a finished shard (list it in the manifest) or record why it failed; both
        are committed with the manifest, so ``errors`` and ``info`` can tell later."""
        if error is not None:
            report.failed[name] = error
            self.manifest.setdefault("failed", {})[name] = {"reason": error}
            write_manifest(self.storage, self.manifest, changed=[])
            say(f"FAILED {error}")
            return
        assert result is not None
        entry = result.entry
        if duplicates := duplicate_ids(self.storage, self.manifest, name, result.image_ids):
            entry["duplicates"] = duplicates
            report.duplicates[name] = duplicates
        replaced = self.manifest["shards"].get(name)
        self.manifest["shards"][name] = entry
        self.manifest.get("failed", {}).pop(name, None)
        write_manifest(self.storage, self.manifest, changed=[name])
        if replaced is not None:
            self.storage.remove_part(name, replaced, keep=entry)
        report.packed.append(name)
        report.images += entry["images"]
        report.masks += entry["masks"]
        if result.errors:
            report.errors[name] = result.errors
        if result.skipped:
            report.skipped_members[name] = result.skipped
        if "damage" in entry:
            report.damaged[name] = entry["damage"]
            say(f"DAMAGED {name}: packed the whole samples before {entry['damage'][0]}: "
                f"{entry['damage'][1]}")  # fmt: skip
        if result.warnings:
            report.warnings[name] = result.warnings
        labelled = (("skipped", result.errors), ("left out", result.skipped),
                    ("warning", result.warnings))  # fmt: skip
        for label, items in labelled:
            for member, reason in items:
                say(f"{label} {name}: {member}: {reason}")
        for other, count, first in duplicates:
            say(f"DUPLICATE {name}: {count} image ids also in {other} (e.g. {first[:5]})")


def pack(
    src: str | os.PathLike,
    store: str | os.PathLike,
    shards: list[int],
    *,
    jobs: int = 1,
    progress: bool = True,
    image_longest: int | None = None,
    on_error: str = "fail",
    backend: str = "loky",
    scheduler: str | None = None,
    repack: bool = False,
    subset: str | os.PathLike | Iterable[int | str] | None = None,
) -> PackReport:
    """Pack shards ``sa_NNNNNN.tar`` of ``src`` into ``store``, committing each as it ends.

    ``jobs`` shards in parallel; ``progress`` bars; ``image_longest`` also keeps every image
    pre-resized to that longest side (a store keeps one setting for all its shards);
    ``on_error="fail"`` (default) fails a shard at its first bad sample, leaving nothing of
    it, while other shards go on, and "skip" packs the rest and records bad samples in the
    manifest (``Store.errors()``), and packs the whole samples of a tar that breaks off;
    ``repack`` re-packs committed shards whose tar changed since (damaged or partly bad ones
    are re-packed anyway); ``backend="dask"`` runs the same per-shard function on a Dask
    cluster (``scheduler`` address, or the current client); ``subset`` (image ids or names,
    or a text file of them) packs only those images.
    """
    tars = find_shards(src, shards)  # missing shards: an error before the store is touched
    options = dict(jobs=jobs, progress=progress, image_longest=image_longest,
                   on_error=on_error, backend=backend, scheduler=scheduler, repack=repack,
                   subset=subset)  # fmt: skip
    with Packer(store, **options) as packer:
        return packer.pack(tars)

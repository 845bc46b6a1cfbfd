"""The reader: open a store, serve sample ``i`` by index with no copies.

Opening reads only the manifest. A part is opened on first touch, once per process, through
the store's backend (memory-mapped locally, byte ranges on object storage): a store created
before ``fork`` re-opens its parts in the child, and pickling (``spawn`` workers) carries only
the URL. Everything handed out is a read-only view.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

import numpy as np

from ..errors import ConfigError, StoreError
from ..storage import Storage, storage_for
from ..storage.cache import PartCache
from ..store.manifest import left_out, read_manifest, shard_names, summary
from ..store.order import DEFAULT_WINDOW, epoch_order
from ..store.spanner import Spanner
from ..store.subset import read_ids, subset_indices
from .parts import MappedPart, Part
from .ranged import RangePart
from .sample import Sample

__all__ = ["Sample", "Store", "StoreError", "open_part", "open_store"]


def open_part(storage: Storage, name: str, entry: dict[str, Any]) -> Part:
    """A committed part, memory-mapped where its files are (or can be fetched) on local disk,
    else read by byte range. A cached part evicted by another process meanwhile is fetched
    once more; anything else is a real error."""
    for attempt in (1, 2):
        folder = storage.local_folder(name, entry)
        if folder is None:
            return RangePart(storage, name, entry)
        try:
            return MappedPart(folder, name, entry)
        except (FileNotFoundError, StoreError):
            if attempt == 2 or folder.is_dir():
                raise
    raise AssertionError("unreachable")


# Open parts kept per process. A mapped part holds no file descriptor, only its maps (4-5
# per part); a part on object storage holds its images table and a few row groups.
MAX_OPEN_PARTS = 64


class Store:
    """A packed store: ``store[i]`` is image i, shards ascending, image ids ascending within."""

    def __init__(
        self,
        store: str | os.PathLike | Storage,
        *,
        max_open_parts: int = MAX_OPEN_PARTS,
        cache_dir: str | os.PathLike | None = None,
        cache_bytes: int | None = None,
    ) -> None:
        if max_open_parts < 1:
            raise ConfigError(f"max_open_parts must be at least 1, got {max_open_parts}")
        self.max_open_parts = max_open_parts
        self.storage = storage_for(store, _cache(cache_dir, cache_bytes))
        self.url = self.storage.url
        self.manifest = read_manifest(self.storage)
        self.shards = shard_names(self.manifest)
        self._spanner = Spanner([self.manifest["shards"][n]["images"] for n in self.shards])
        self._parts: OrderedDict[int, Part] = OrderedDict()  # least recently used first
        self._lock = threading.Lock()  # threads of one process (the threaded loader) share it
        self._pid = os.getpid()
        self._by_id: tuple[np.ndarray, np.ndarray] | None = None

    def __getstate__(self) -> dict[str, Any]:
        cache = self.storage.cache
        return {
            "store": self.url,
            "max_open_parts": self.max_open_parts,
            "cache_dir": cache and cache.directory,
            "cache_bytes": cache and cache.max_bytes,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        store = state.pop("store")
        self.__init__(store, **state)

    def __len__(self) -> int:
        return len(self._spanner)

    def __repr__(self) -> str:
        return f"Store({self.url!r}, shards={len(self.shards)}, images={len(self)})"

    def part(self, p: int) -> Part:
        """Part ``p``, opened on first use; at most ``max_open_parts`` stay open, least
        recently used closed first, so resources follow what a process reads, not the store."""
        if self._pid != os.getpid():  # forked: parts are re-opened per process
            self._parts, self._pid = OrderedDict(), os.getpid()
            self._lock = threading.Lock()
        with self._lock:
            part = self._parts.get(p)
            if part is not None:
                self._parts.move_to_end(p)
                return part
            name = self.shards[p]
            try:
                part = open_part(self.storage, name, self.manifest["shards"][name])
            except (KeyError, TypeError) as exc:
                raise StoreError(
                    f"{self.url}: manifest entry of {name} is corrupt ({exc})"
                ) from None
            self._parts[p] = part
            if len(self._parts) > self.max_open_parts:
                self._parts.popitem(last=False)
            return part

    def __getitem__(self, index: int) -> Sample:
        p, local = self._spanner.locate(index)
        return Sample(self.part(p), local)

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def predownload(self, indices: np.ndarray) -> None:
        """Fetch the parts these global indices fall in, in order of first use, ahead of the
        reads (a store on object storage with a cache; otherwise nothing is done). Call it in
        the main process with the epoch's order: DataLoader workers then find parts cached."""
        parts = self.parts_of(indices)
        _, first = np.unique(parts, return_index=True)
        names = [self.shards[p] for p in parts[np.sort(first)]]
        self.storage.predownload([(n, self.manifest["shards"][n]) for n in names])

    def parts_of(self, indices: np.ndarray) -> np.ndarray:
        """The part each global index falls in (vectorised ``Spanner.locate``)."""
        return np.searchsorted(self._spanner.ends, np.asarray(indices), side="right")

    def part_start(self, p: int) -> int:
        """Global index of part ``p``'s first sample."""
        return int(self._spanner.starts[p])

    @property
    def image_longest(self) -> int | None:
        """Longest side of the pre-resized JPEGs every sample carries, or None."""
        return self.manifest.get("image_longest")

    @property
    def part_sizes(self) -> np.ndarray:
        """Samples per part, in store order."""
        return self._spanner.ends - self._spanner.starts

    def epoch_order(
        self, *, seed: int = 0, epoch: int = 0, order: str = "uniform", window: int = DEFAULT_WINDOW
    ) -> np.ndarray:
        """Every global index once, in epoch ``epoch``'s order (see store/order.py):
        ``uniform``, or ``blocks`` of ``window`` parts for locality."""
        return epoch_order(self.part_sizes, seed=seed, epoch=epoch, order=order, window=window)

    def index_of(self, image_id: int, shard: str | None = None) -> int:
        """Global index of an image id; KeyError if the store does not hold it, ValueError
        if two shards do (say which with ``shard``, e.g. "sa_000123")."""
        found = self.indices_of(image_id)
        if shard is not None:
            found = [i for i in found if self.shards[self._spanner.locate(i)[0]] == shard]
        if not found:
            where = f"shard {shard} of {self.url}" if shard else str(self.url)
            raise KeyError(f"image id {image_id} is not in {where}")
        if len(found) > 1:
            names = ", ".join(self.shards[self._spanner.locate(i)[0]] for i in found)
            raise ConfigError(
                f"image id {image_id} is in {len(found)} shards ({names}): pass shard= to pick "
                "one ('sa1b-pack errors' lists duplicate ids)"
            )
        return found[0]

    def indices_of(self, image_id: int) -> list[int]:
        """Every global index holding ``image_id`` (more than one only if shards repeat it)."""
        ids, order = self.id_index()
        first, last = np.searchsorted(ids, image_id), np.searchsorted(ids, image_id, "right")
        return sorted(int(i) for i in order[first:last])

    def id_index(self) -> tuple[np.ndarray, np.ndarray]:
        """(every image id, sorted; the global index of each), built on first use."""
        if self._by_id is None:
            ids = [self.part(p).images["image_id"] for p in range(len(self.shards))]
            ids = np.concatenate(ids or [[]]).astype(np.int64)
            order = np.argsort(ids, kind="stable")
            self._by_id = (ids[order], order)
        return self._by_id

    def subset(
        self, ids: str | os.PathLike | Iterable[int | str], missing: str = "error"
    ) -> np.ndarray:
        """Sorted global indices of a named subset: image ids or file names, or a text file
        of them, one per line (see store/subset.py); KeyError naming ids the store lacks,
        unless ``missing="ignore"``."""
        return subset_indices(*self.id_index(), read_ids(ids), self.url, missing)

    def errors(self) -> list[dict[str, str]]:
        """What packing left out, and samples packed with a warning (see manifest.left_out)."""
        return left_out(self.manifest)

    def info(self) -> dict[str, Any]:
        """Shards, images, masks, bytes and format version, from the manifest alone."""
        return summary(self.manifest, self.url)


def _cache(cache_dir: str | os.PathLike | None, cache_bytes: int | None) -> PartCache | None:
    if cache_dir is None:
        return None
    if cache_bytes is None:
        raise ConfigError("cache_dir needs cache_bytes: the most the cache may hold")
    return PartCache(cache_dir, int(cache_bytes))


def open_store(
    store: str | os.PathLike,
    *,
    max_open_parts: int = MAX_OPEN_PARTS,
    cache_dir: str | os.PathLike | None = None,
    cache_bytes: int | None = None,
) -> Store:
    """Open a packed store; reads the manifest only. StoreError if it is not one.

    On object storage, ``cache_dir`` + ``cache_bytes`` keep whole parts on local disk
    (see storage/cache.py), shared by every process of the machine that names the same
    directory; a local store ignores them.
    """
    return Store(store, max_open_parts=max_open_parts, cache_dir=cache_dir, cache_bytes=cache_bytes)

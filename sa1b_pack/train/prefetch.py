"""The sampler drives a store's part cache: what its node reads next is predownloaded, in
order, and what its node is done with is released (evicted first), without the user calling
``predownload``. Nothing happens for a store without a cache (local, or ranged reads).

A rank knows its node's whole stream (every rank of a node computes the same one), so each
rank predownloads the node's parts in order of first use; the cache's per-part lock makes the
node download each part once, whichever rank asks first. A part is released ``lag`` stream
positions after its last use: the DataLoader's workers read the samples a little after the
sampler hands them out, and a part released too early is downloaded again when a worker that
had not opened it yet reads one of its last samples. numpy only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

RELEASE_AFTER = 1024  # steps per rank between a part's last use and its release


class PartFeed:
    """Feeds one pass over ``stream`` (positions, their parts by ``part_sizes``), from stream
    position ``start``, to the part cache of ``store``; ``advance(position)`` as it goes."""

    def __init__(self, store: Any, part_sizes: np.ndarray, stream: np.ndarray, start: int,
                 lag: int) -> None:  # fmt: skip
        self.store, self.cache = store, store.storage.cache
        parts = np.searchsorted(np.cumsum(part_sizes), stream[start:], side="right")
        last = np.full(len(part_sizes), -1, np.int64)
        np.maximum.at(last, parts, np.arange(len(parts)))
        used = np.flatnonzero(last >= 0)
        first = np.full(len(part_sizes), len(parts), np.int64)
        np.minimum.at(first, parts, np.arange(len(parts)))
        self.ahead = used[np.argsort(first[used], kind="stable")]  # in order of first use
        done = start + last[used] + 1 + lag  # stream position from which a part is released
        order = np.argsort(done, kind="stable")
        self.behind, self.done_at = used[order].tolist(), done[order].tolist()
        self._next = 0

    def _named(self, p: int) -> tuple[str, dict[str, Any]]:
        name = self.store.shards[p]
        return name, self.store.manifest["shards"][name]

    def start(self) -> None:
        """Queue this pass's parts for download, in order, replacing any earlier pass's."""
        self.cache.predownload(self.store.storage, [self._named(p) for p in self.ahead],
                               replace=True)  # fmt: skip

    def advance(self, position: int) -> None:
        """The node's stream has been taken up to ``position``: release the parts done with."""
        while self._next < len(self.behind) and self.done_at[self._next] <= position:
            self.cache.release(self.store.storage, *self._named(self.behind[self._next]))
            self._next += 1


def part_feed(dataset: Any, part_sizes: np.ndarray, stream: np.ndarray, start: int,
              lag: int) -> PartFeed | None:  # fmt: skip
    """A started feed for ``dataset``'s store (the dataset may be a ``Store``), or None when
    the store has no part cache."""
    store = getattr(dataset, "store", dataset)
    if getattr(getattr(store, "storage", None), "cache", None) is None:
        return None
    feed = PartFeed(store, part_sizes, stream, start, lag)
    feed.start()
    return feed

"""Image ids a new shard shares with shards already committed: recorded in the manifest
(``sa1b-pack errors`` lists them) so that ``Store.index_of`` can ask which one is meant."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..read.reader import open_part
from ..storage import Storage


def duplicate_ids(
    storage: Storage, manifest: dict[str, Any], name: str, ids: np.ndarray
) -> list[list[Any]]:
    """[other shard, count, first ids] for each committed shard holding image ids that shard
    ``name`` (sorted ``ids``) holds too. Only shards whose id range overlaps are opened: real
    SA-1B shards have disjoint ranges, so this reads nothing at all there."""
    found: list[list[Any]] = []
    if not len(ids):
        return found
    low, high = int(ids[0]), int(ids[-1])
    for other, entry in sorted(manifest["shards"].items()):
        span = entry.get("image_ids")
        if other == name or not span or span[1] < low or span[0] > high:
            continue
        theirs = open_part(storage, other, entry).images["image_id"]
        both = np.intersect1d(ids, theirs)
        if len(both):
            found.append([other, len(both), both[:20].tolist()])
    return found

"""Epoch orders over a store's samples: a pure function of (seed, epoch), global over the store.

``uniform``: a permutation of every sample. Each rank touches every part all epoch long.

``blocks``: locality-aware, after MosaicML Streaming's ``py1b``: the parts are permuted
(per epoch), cut into blocks of ``window`` consecutive parts, and the samples of each block
are shuffled uniformly among themselves. Blocks follow one another, so ranks that take
global positions r, r + W, r + 2W, ... all work through the same block at the same time, and
each rank reads from at most ``window`` parts (two at a block boundary: 2 * ``window``) over
any stretch of its steps. What is adopted from py1b: shuffling whole spans of shards, then
samples within a block. Both orders depend on neither the world size nor the workers (an
elastic resume goes through the global position); the node-aware order, after Streaming's
canonical nodes, deals parts to nodes instead (train/nodes.py).
Cost: O(samples) per epoch (one permutation per block), no sort.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError

ORDERS = ("uniform", "blocks")
DEFAULT_WINDOW = 8  # parts per block: ~88,000 SA-1B images mixed together, ~80 GB of parts


def epoch_order(
    part_sizes: np.ndarray,
    *,
    seed: int,
    epoch: int,
    order: str = "uniform",
    window: int = DEFAULT_WINDOW,
) -> np.ndarray:
    """The positions 0..sum(part_sizes)-1 in epoch ``epoch``'s order (int64), where the
    items of part p are the ``part_sizes[p]`` consecutive positions after those of part p-1."""
    if order not in ORDERS:
        raise ConfigError(f"order must be one of {ORDERS}, got {order!r}")
    if window < 1:
        raise ConfigError(f"window must be at least 1 part, got {window}")
    sizes = np.asarray(part_sizes, np.int64)
    total = int(sizes.sum())
    if order == "uniform":
        return np.random.default_rng((seed, epoch)).permutation(total)
    rng = np.random.default_rng((seed, epoch, ORDERS.index(order)))
    starts = np.cumsum(sizes) - sizes
    parts = rng.permutation(len(sizes))
    out = np.empty(total, np.int64)
    filled = 0
    for first in range(0, len(parts), window):
        block = parts[first : first + window]
        begin = filled
        for p in block:
            out[filled : filled + sizes[p]] = np.arange(starts[p], starts[p] + sizes[p])
            filled += int(sizes[p])
        rng.shuffle(out[begin:filled])
    return out

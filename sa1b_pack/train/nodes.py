"""The node-aware order: each part is read by one node per epoch, so a per-node part cache
downloads each part once per cluster per epoch (``SA1BSampler(order="nodes")``).

After MosaicML Streaming's canonical nodes: an epoch's parts are dealt to ``partitions``
groups as a function of (seed, epoch, partitions) only, and each partition's samples come in
one fixed order (its parts one after another, each part's samples permuted). The partitions
are dealt to the nodes, balanced by sample count (in the epoch's random order, each to the
least loaded node).
A node's stream takes its partitions ``window`` at a time and interleaves their samples at
random; rank j of the node's R ranks takes positions j, j + R, ... of that stream.

Whatever the interleaving, each partition is consumed as a prefix of its own fixed order, so
where a partly read epoch stands is one count per partition: a resume with another number
of nodes or ranks per node re-deals what is left of each partition, and a partition already
started stays on its node when that node still exists, so its cache keeps serving it.

Nodes hold whole parts, so their streams differ in length: each is padded at its end with
its own last samples (already in its cache) to the longest stream's number of steps, so
every rank yields the same count; ``drop_last`` cuts every node to the shortest instead.
Pure numpy: the sampler (train/sampler.py) and the cluster simulation (benchmarks/cluster.py)
share it.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Sequence

import numpy as np

_TAG = 2  # seeds of this order: (seed, epoch, _TAG, ...), apart from store/order.py's


def deal(remaining: np.ndarray, nodes: int, pinned: np.ndarray | None = None) -> np.ndarray:
    """The node of each partition (-1 where nothing remains): ``pinned[k] >= 0`` keeps
    partition k there, the others go in order to the least loaded node (ties: lowest node),
    so nodes differ by at most one partition's samples (pins aside). In order, not largest
    first: partitions are drawn anew each epoch, so the deal is too (largest first would deal
    parts of the same sizes to the same nodes every epoch)."""
    remaining = np.asarray(remaining, np.int64)
    out = np.full(len(remaining), -1, np.int64)
    loads = np.zeros(nodes, np.int64)
    if pinned is not None:
        pinned = np.asarray(pinned, np.int64)
        keep = (pinned >= 0) & (remaining > 0)
        out[keep] = pinned[keep]
        np.add.at(loads, out[keep], remaining[keep])
    heap = [(int(load), n) for n, load in enumerate(loads)]
    heapq.heapify(heap)
    for k in range(len(remaining)):
        if remaining[k] > 0 and out[k] < 0:
            load, n = heapq.heappop(heap)
            out[k] = n
            heapq.heappush(heap, (load + int(remaining[k]), n))
    return out


class NodeOrder:
    """One epoch's node streams, starting from ``base`` (samples of each partition consumed
    before this stream began; zeros for a whole epoch) with ``dealt`` (the node of each
    partition; by default ``deal`` of what remains). Positions are 0..sum(part_sizes)-1, part
    p's items the ``part_sizes[p]`` consecutive positions after part p-1's."""

    def __init__(
        self,
        part_sizes: np.ndarray,
        *,
        seed: int,
        epoch: int,
        partitions: int,
        window: int,
        nodes: int,
        ranks_per_node: int,
        base: Sequence[int] | None = None,
        dealt: Sequence[int] | None = None,
    ) -> None:
        if partitions < 1 or window < 1 or nodes < 1 or ranks_per_node < 1:
            raise ValueError("partitions, window, nodes and ranks_per_node must be at least 1")
        self.sizes = np.asarray(part_sizes, np.int64)
        self.starts = np.cumsum(self.sizes) - self.sizes
        self.seed, self.epoch, self.window = seed, epoch, window
        self.fresh = base is None and dealt is None  # a whole epoch, not a resumed rest
        self.nodes, self.ranks_per_node = nodes, ranks_per_node
        parts = np.random.default_rng((seed, epoch, _TAG, 0)).permutation(len(self.sizes))
        self.members = [parts[k::partitions] for k in range(partitions)]
        self.totals = np.array([self.sizes[m].sum() for m in self.members], np.int64)
        self.base = np.zeros(partitions, np.int64) if base is None else np.asarray(base, np.int64)
        if self.base.shape != (partitions,) or ((self.base < 0) | (self.base > self.totals)).any():
            raise ValueError(f"base must count 0..size samples of each of {partitions} partitions")
        remaining = self.totals - self.base
        self.dealt = deal(remaining, nodes) if dealt is None else np.asarray(dealt, np.int64)
        if (
            self.dealt.shape != (partitions,)
            or (self.dealt >= nodes).any()
            or ((self.dealt < 0) & (remaining > 0)).any()
        ):
            raise ValueError(f"dealt must name a node below {nodes} for every partition left")
        self.lengths = np.bincount(self.dealt[remaining > 0], remaining[remaining > 0], nodes)
        self.lengths = self.lengths.astype(np.int64)

    @property
    def partitions(self) -> int:
        return len(self.members)

    def steps(self, drop_last: bool = False) -> int:
        """Samples every rank yields this stream: the longest node's, padded (or the
        shortest's, cut, with ``drop_last``)."""
        r = self.ranks_per_node
        return int(self.lengths.min() // r if drop_last else -(-self.lengths.max() // r))

    def _blocks(self, node: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(partitions of a block, their block-local labels interleaved at random)."""
        left = self.totals - self.base
        mine = np.flatnonzero((self.dealt == node) & (left > 0))
        rng = np.random.default_rng((self.seed, self.epoch, _TAG, 1, node, int(self.base.sum())))
        for first in range(0, len(mine), self.window):
            block = mine[first : first + self.window]
            local = np.repeat(np.arange(len(block), dtype=np.min_scalar_type(len(block))),
                              left[block])  # fmt: skip
            yield block, rng.permutation(local)

    def labels(self, node: int) -> np.ndarray:
        """The partition of each position of a node's stream (unpadded)."""
        out = [block[local] for block, local in self._blocks(node)]
        return np.concatenate(out) if out else np.empty(0, np.int64)

    def sequence(self, k: int) -> np.ndarray:
        """Partition k's samples in its fixed order (a function of seed, epoch, partitions)."""
        out = [self.starts[p] + np.random.default_rng((self.seed, self.epoch, _TAG, 2, int(p)))
               .permutation(self.sizes[p]) for p in self.members[k]]  # fmt: skip
        return np.concatenate(out) if out else np.empty(0, np.int64)

    def stream(self, node: int) -> np.ndarray:
        """A node's positions in order (unpadded): each partition's samples from its base, in
        its fixed order, interleaved with the others of its block."""
        out = []
        for block, local in self._blocks(node):
            rest = np.concatenate([self.sequence(k)[self.base[k] :] for k in block])
            mixed = np.empty_like(rest)
            mixed[np.argsort(local, kind="stable")] = rest  # keeps each partition's order
            out.append(mixed)
        return np.concatenate(out) if out else np.empty(0, np.int64)

    def padded(self, node: int, drop_last: bool = False) -> np.ndarray:
        """A node's stream at ``steps() * ranks_per_node`` positions: cut, or padded with its
        own last samples (a node with nothing left pads with the longest node's)."""
        want = self.steps(drop_last) * self.ranks_per_node
        own = self.stream(node)
        if len(own) >= want:
            return own[:want]
        source = own if len(own) else self.stream(int(np.argmax(self.lengths)))
        pad = want - len(own)
        tail = source[-pad:] if pad <= len(source) else np.resize(source, pad)
        return np.concatenate([own, tail])

    def rank_positions(self, rank: int, start: int = 0, drop_last: bool = False) -> np.ndarray:
        """The positions rank ``rank`` (node rank // R) takes, from its step ``start``."""
        node, local = divmod(rank, self.ranks_per_node)
        if node >= self.nodes:
            raise ValueError(f"rank {rank} out of range for {self.nodes} nodes")
        return self.padded(node, drop_last)[local :: self.ranks_per_node][start:]

    def consumed(self, steps: int) -> np.ndarray:
        """Samples of each partition consumed once every rank has taken ``steps`` (padding
        is not counted)."""
        out = self.base.copy()
        for node in np.flatnonzero(self.lengths):
            taken = self.labels(int(node))[: steps * self.ranks_per_node]
            out += np.bincount(taken, minlength=self.partitions)
        return out

    def consumed_total(self, steps: int) -> int:
        """``consumed(steps).sum()``, from the lengths alone."""
        taken = np.minimum(self.lengths, steps * self.ranks_per_node).sum()
        return int(self.base.sum() + taken)

    def resume(self, steps: int, nodes: int, ranks_per_node: int) -> NodeOrder:
        """The rest of the epoch after ``steps`` per rank, for another layout: what is left of
        each partition re-dealt, partitions already started kept on their node if it exists."""
        consumed = self.consumed(steps)
        started = (consumed > 0) & (consumed < self.totals) & (self.dealt < nodes)
        pinned = np.where(started, self.dealt, -1)
        return NodeOrder(self.sizes, seed=self.seed, epoch=self.epoch,
                         partitions=self.partitions, window=self.window, nodes=nodes,
                         ranks_per_node=ranks_per_node, base=consumed,
                         dealt=deal(self.totals - consumed, nodes, pinned))  # fmt: skip

"""Which samples each rank reads, in which order, and where an interrupted epoch resumes.

``uniform`` and ``blocks`` (store/order.py) are global orders, a function of (seed, epoch)
only: rank r of W takes global positions r, r + W, r + 2W, ... from where the epoch starts (0,
or a resumed position), padded at the end by wrapping to the epoch's first positions like
torch's ``DistributedSampler`` (``drop_last`` cuts instead). Their state counts *global*
positions: after each rank has yielded k samples from start s, the epoch has consumed
s + k * W positions, whatever W is, so a run saved at W ranks resumes at W' ranks with
exactly the positions not yet consumed (padding aside).

``nodes`` (train/nodes.py) deals whole parts to nodes (node = rank // ranks_per_node), so a
part cache per node downloads each part once per cluster per epoch. Its state counts what each
of its ``partitions`` has consumed (and the stream it is in, for an exact resume); a resume
with another number of nodes or ranks per node re-deals what is left. It is opt-in, not the
default for many nodes: its order depends on the node count, a node mixes only its own
``window`` parts at a time, and where every node reads the whole store cheaply (local disks,
a shared file system, ranged reads) it saves nothing. Choose it for object storage read
through the part cache on more than one node; the sampler warns when such a store is read in
another order. With a part cache, ``blocks`` and ``nodes`` also drive it (train/prefetch.py):
the node's next parts are predownloaded in order, those it has read are released first.

Indices are yielded as ``(dataset index, epoch)`` pairs: the epoch travels with each index to
the DataLoader workers, so mask draws follow ``set_epoch`` even in persistent workers, which
never see the main process's dataset again. numpy only; ``sa1b_pack.torch.SA1BSampler`` adds
torch's process group defaults.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from ..store.order import DEFAULT_WINDOW, ORDERS, epoch_order
from .nodes import NodeOrder
from .prefetch import RELEASE_AFTER, part_feed

STATE_KEY = "sa1b_sampler"  # marks this sampler's state inside a StatefulDataLoader's
SAMPLER_ORDERS = (*ORDERS, "nodes")
logger = logging.getLogger("sa1b_pack")


def local_world_size() -> int:
    """Ranks per node as torchrun sets it (``LOCAL_WORLD_SIZE``), else 1."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


class EpochSampler:
    """Rank ``rank`` of ``num_replicas``'s share of a dataset's epoch order, resumable.

    ``dataset`` needs ``len()`` and, for ``blocks`` and ``nodes``, ``store`` and ``index``
    (the store position of each item: ``SA1BDataset``), or is a ``Store`` itself.
    ``set_epoch(e)`` also sets the dataset's epoch when it has ``set_epoch``. ``nodes`` only:
    ``ranks_per_node`` (default ``LOCAL_WORLD_SIZE``, else 1) must divide ``num_replicas``;
    ``partitions`` (default: one per part) is fixed for a run, recorded in the state.
    ``release_after``: steps per rank from a part's last use to its release from the cache.
    """

    def __init__(
        self,
        dataset: Any,
        num_replicas: int,
        rank: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        order: str = "uniform",
        window: int = DEFAULT_WINDOW,
        drop_last: bool = False,
        ranks_per_node: int | None = None,
        partitions: int | None = None,
        release_after: int = RELEASE_AFTER,
    ) -> None:
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} out of range for {num_replicas} replicas")
        if order not in SAMPLER_ORDERS:
            raise ValueError(f"order must be one of {SAMPLER_ORDERS}, got {order!r}")
        self.dataset, self.num_replicas, self.rank = dataset, num_replicas, rank
        self.seed, self.shuffle, self.order, self.window = seed, shuffle, order, window
        self.drop_last, self.partitions, self.release_after = drop_last, partitions, release_after
        self.ranks_per_node = local_world_size() if ranks_per_node is None else ranks_per_node
        if order == "nodes" and (self.ranks_per_node < 1 or num_replicas % self.ranks_per_node):
            raise ValueError(
                f"order='nodes' needs num_replicas ({num_replicas}) to be a multiple of "
                f"ranks_per_node ({self.ranks_per_node}; default LOCAL_WORLD_SIZE, else 1)"
            )
        self.epoch = 0
        self._start = 0  # global position where the next iteration of this epoch begins
        self._position = 0  # global positions of this epoch consumed, ranks stepping together
        self._pending: tuple[NodeOrder | None, int] = (None, 0)  # nodes: next stream, step
        self._running: list | None = None  # nodes: [stream, steps taken] of this iteration
        self._sizes: np.ndarray | None = None
        store = getattr(dataset, "store", dataset)
        cached = getattr(getattr(store, "storage", None), "cache", None) is not None
        if cached and order != "nodes" and num_replicas // max(self.ranks_per_node, 1) > 1:
            logger.warning(
                "SA1BSampler: %d nodes read a cached object store in order %r: each node "
                "downloads nearly every part per epoch; order='nodes' reads each part on one node",
                num_replicas // self.ranks_per_node,
                order,
            )

    @property
    def _by_node(self) -> bool:
        return self.shuffle and self.order == "nodes"

    def __len__(self) -> int:
        if self._by_node:
            plan, start = self._pending
            return max((plan or self._fresh()).steps(self.drop_last) - start, 0)
        return self._count(self._start)

    def _count(self, start: int) -> int:
        remaining = max(len(self.dataset) - start, 0)
        if self.drop_last:
            return remaining // self.num_replicas
        return math.ceil(remaining / self.num_replicas)

    def set_epoch(self, epoch: int) -> None:
        """Draw epoch ``epoch``'s order (and the dataset's mask draws) on the next iteration;
        a resumed position holds only for the epoch it was saved in."""
        epoch = int(epoch)
        if epoch != self.epoch:
            self._start = self._position = 0
            self._pending, self._running = (None, 0), None
        self.epoch = epoch
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def part_sizes(self) -> np.ndarray:
        """Items of the dataset in each part of its store, in store order."""
        if self._sizes is None:
            if hasattr(self.dataset, "index"):
                store = self.dataset.store
                parts = store.parts_of(self.dataset.index)
                self._sizes = np.bincount(parts, minlength=len(store.shards))
            else:
                self._sizes = np.asarray(self.dataset.part_sizes)
        return self._sizes

    def global_order(self) -> np.ndarray:
        """Every dataset index once, in this epoch's order: the same for every rank
        (``uniform`` and ``blocks``; ``nodes`` has one order per node)."""
        n = len(self.dataset)
        if not self.shuffle:
            return np.arange(n)
        if self._by_node:
            raise ValueError("order='nodes' has no global order: see node_order()")
        sizes = self.part_sizes() if self.order == "blocks" else np.array([n])
        return epoch_order(sizes, seed=self.seed, epoch=self.epoch, order=self.order,
                           window=self.window)  # fmt: skip

    def _fresh(self) -> NodeOrder:
        """This epoch's node order from its start."""
        sizes, r = self.part_sizes(), self.ranks_per_node
        return NodeOrder(sizes, seed=self.seed, epoch=self.epoch, window=self.window,
                         partitions=self.partitions or len(sizes),
                         nodes=self.num_replicas // r, ranks_per_node=r)  # fmt: skip

    def node_order(self) -> NodeOrder:
        """The node streams the next iteration reads (``order="nodes"``)."""
        return self._pending[0] or self._fresh()

    def positions(self, start: int) -> np.ndarray:
        """The global positions this rank takes from ``start`` to the end of the epoch."""
        return start + self.rank + self.num_replicas * np.arange(self._count(start))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self._by_node:
            yield from self._iter_nodes()
            return
        order = self.global_order()
        start, epoch = self._start, self.epoch
        self._position = start
        self._start = 0  # the next iteration is a whole epoch again, unless loaded
        feed = None
        if self.shuffle and self.order == "blocks":  # every node reads every block
            feed = part_feed(self.dataset, self.part_sizes(), order, start,
                             self.release_after * self.num_replicas)  # fmt: skip
        for position in self.positions(start).tolist():
            if feed is not None:
                feed.advance(self._position)
            self._position += self.num_replicas
            yield int(order[position % len(order)]), epoch

    def _iter_nodes(self) -> Iterator[tuple[int, int]]:
        plan, start = self._pending
        plan, epoch, r = plan or self._fresh(), self.epoch, self.ranks_per_node
        self._pending = (None, 0)  # the next iteration is a whole epoch again, unless loaded
        self._running = [plan, start]
        stream = plan.padded(self.rank // r, self.drop_last)
        feed = part_feed(self.dataset, self.part_sizes(), stream, start * r,
                         self.release_after * r)  # fmt: skip
        for position in stream[self.rank % r :: r][start:].tolist():
            if feed is not None:
                feed.advance(self._running[1] * r)
            self._running[1] += 1
            yield int(position), epoch

    @property
    def consumed(self) -> int:
        """Samples of this epoch consumed once every rank has yielded what this one has
        (ranks step together), padding aside."""
        if self._by_node:
            plan, steps = self._running or self._pending
            return min((plan or self._fresh()).consumed_total(steps), len(self.dataset))
        return min(self._position, len(self.dataset))

    def state_dict(self) -> dict[str, Any]:
        """``{"epoch", "consumed", ...}``. Inside a ``StatefulDataLoader`` this is taken as
        each batch's indices are drawn, so the loader's own state is exact; called directly
        it counts what this sampler has handed out, prefetched batches included."""
        state = {STATE_KEY: 1, "epoch": self.epoch, "consumed": self.consumed,
                 "seed": self.seed, "order": self.order, "window": self.window,
                 "num_replicas": self.num_replicas}  # fmt: skip
        if self._by_node:
            plan, steps = self._running or self._pending
            plan = plan or self._fresh()
            state.update(ranks_per_node=self.ranks_per_node, partitions=plan.partitions,
                         steps=steps, base=None if plan.fresh else plan.base.tolist(),
                         dealt=None if plan.fresh else plan.dealt.tolist())  # fmt: skip
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume where the state says, for any number of ranks (and of nodes).

        ``state`` is this sampler's state, a whole ``StatefulDataLoader.state_dict()`` holding
        it (found inside), or a plain ``{"epoch", "consumed"}`` counted by a loop without one
        (a global position; for ``nodes``, whole steps of this sampler's layout). Seed, order,
        window and partitions are checked where the state has them.
        """
        mine = find_state(state)
        if mine is None:
            raise ValueError("no SA1BSampler state in what was given")
        own = {"seed": self.seed, "order": self.order, "window": self.window}
        if self._by_node:
            own["partitions"] = self.node_order().partitions
        for key, value in own.items():
            if mine.get(key, value) != value:
                raise ValueError(
                    f"the saved order has {key}={mine[key]!r}, this sampler {value!r}: the "
                    "resumed epoch would not be the same order"
                )
        self.epoch, self._running = int(mine["epoch"]), None
        self._start = self._position = int(mine["consumed"])
        if self._by_node:
            self._pending = self._resumed(mine)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(self.epoch)

    def _resumed(self, mine: Mapping[str, Any]) -> tuple[NodeOrder | None, int]:
        """(stream, start step) of a resumed ``nodes`` epoch: the saved stream at the saved
        layout, else what it left re-dealt to this one."""
        w, r = self.num_replicas, self.ranks_per_node
        if "steps" not in mine:  # plain {"epoch", "consumed"}
            steps, extra = divmod(int(mine["consumed"]), w)
            if extra:
                raise ValueError(
                    f"consumed={mine['consumed']} is not a whole number of steps of {w} ranks: "
                    "a plain {'epoch', 'consumed'} resumes order='nodes' at its own world size"
                )
            return None, steps
        saved_w, saved_r = int(mine["num_replicas"]), int(mine["ranks_per_node"])
        saved = NodeOrder(self.part_sizes(), seed=self.seed, epoch=self.epoch,
                          partitions=int(mine["partitions"]), window=self.window,
                          nodes=saved_w // saved_r, ranks_per_node=saved_r,
                          base=mine["base"], dealt=mine["dealt"])  # fmt: skip
        if (saved_w, saved_r) == (w, r):
            return (None if saved.fresh else saved), int(mine["steps"])
        return saved.resume(int(mine["steps"]), w // r, r), 0


def find_state(state: Any) -> Mapping[str, Any] | None:
    """This sampler's state, wherever a loader's state dict nests it, or a plain
    ``{"epoch", "consumed"}`` mapping (or None)."""
    found = _marked(state)
    if found is None and isinstance(state, Mapping) and {"epoch", "consumed"} <= state.keys():
        return state
    return found


def _marked(state: Any) -> Mapping[str, Any] | None:
    if isinstance(state, Mapping):
        if state.get(STATE_KEY) == 1:
            return state
        for value in state.values():
            if (found := _marked(value)) is not None:
                return found
    elif isinstance(state, list | tuple):
        for value in state:
            if (found := _marked(value)) is not None:
                return found
    return None

"""Which samples each rank reads, in which order, and where an interrupted epoch resumes.

The order of epoch e is global and a function of (seed, epoch) only (store/order.py:
``uniform`` or locality-aware ``blocks``); rank r of W takes global positions r, r + W,
r + 2W, ... from where the epoch starts (0, or a resumed position), padded at the end by
wrapping to the epoch's first positions like torch's ``DistributedSampler`` (``drop_last``
cuts instead). State is counted in *global* positions: after each rank has yielded k samples
from start s, the epoch has consumed s + k * W positions, whatever W is, so a run saved at W
ranks resumes at W' ranks with exactly the positions not yet consumed (padding aside).

Indices are yielded as ``(dataset index, epoch)`` pairs: the epoch travels with each index to
the DataLoader workers, so mask draws follow ``set_epoch`` even in persistent workers, which
never see the main process's dataset again. numpy only; ``sa1b_pack.torch.SA1BSampler`` adds
torch's process group defaults.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from ..store.order import DEFAULT_WINDOW, ORDERS, epoch_order

STATE_KEY = "sa1b_sampler"  # marks this sampler's state inside a StatefulDataLoader's


class EpochSampler:
    """Rank ``rank`` of ``num_replicas``'s share of a dataset's epoch order, resumable.

    ``dataset`` needs ``len()`` and, for ``order="blocks"``, ``store`` and ``index`` (the
    store position of each item: ``SA1BDataset``). ``set_epoch(e)`` also sets the dataset's
    epoch when it has ``set_epoch``.
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
    ) -> None:
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} out of range for {num_replicas} replicas")
        if order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
        self.dataset, self.num_replicas, self.rank = dataset, num_replicas, rank
        self.seed, self.shuffle, self.order, self.window = seed, shuffle, order, window
        self.drop_last = drop_last
        self.epoch = 0
        self._start = 0  # global position where the next iteration of this epoch begins
        self._position = 0  # global positions of this epoch consumed, ranks stepping together

    def __len__(self) -> int:
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
        self.epoch = epoch
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def global_order(self) -> np.ndarray:
        """Every dataset index once, in this epoch's order: the same for every rank."""
        n = len(self.dataset)
        if not self.shuffle:
            return np.arange(n)
        if self.order == "blocks":
            parts = self.dataset.store.parts_of(self.dataset.index)
            sizes = np.bincount(parts, minlength=len(self.dataset.store.shards))
        else:
            sizes = np.array([n])
        return epoch_order(sizes, seed=self.seed, epoch=self.epoch, order=self.order,
                           window=self.window)  # fmt: skip

    def positions(self, start: int) -> np.ndarray:
        """The global positions this rank takes from ``start`` to the end of the epoch."""
        return start + self.rank + self.num_replicas * np.arange(self._count(start))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = self.global_order()
        start, epoch = self._start, self.epoch
        self._position = start
        self._start = 0  # the next iteration is a whole epoch again, unless loaded
        for position in self.positions(start).tolist():
            self._position += self.num_replicas
            yield int(order[position % len(order)]), epoch

    @property
    def consumed(self) -> int:
        """Global positions of this epoch consumed once every rank has yielded what this
        one has (ranks step together)."""
        return min(self._position, len(self.dataset))

    def state_dict(self) -> dict[str, Any]:
        """``{"epoch", "consumed", ...}``. Inside a ``StatefulDataLoader`` this is taken as
        each batch's indices are drawn, so the loader's own state is exact; called directly
        it counts what this sampler has handed out, prefetched batches included."""
        return {STATE_KEY: 1, "epoch": self.epoch, "consumed": self.consumed,
                "seed": self.seed, "order": self.order, "window": self.window,
                "num_replicas": self.num_replicas}  # fmt: skip

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume at the saved global position of the saved epoch, for any number of ranks.

        ``state`` is this sampler's state or a whole ``StatefulDataLoader.state_dict()``
        holding it (found inside): with another world size or number of workers, load the
        loader's saved state here and start a fresh loader.
        """
        mine = find_state(state)
        if mine is None:
            raise ValueError("no SA1BSampler state in what was given")
        for key in ("seed", "order", "window"):
            if mine.get(key, getattr(self, key)) != getattr(self, key):
                raise ValueError(
                    f"the saved order has {key}={mine[key]!r}, this sampler "
                    f"{getattr(self, key)!r}: the resumed epoch would not be the same order"
                )
        self.epoch = int(mine["epoch"])
        self._start = self._position = int(mine["consumed"])
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(self.epoch)


def find_state(state: Any) -> Mapping[str, Any] | None:
    """This sampler's state, wherever a loader's state dict nests it (or None)."""
    if isinstance(state, Mapping):
        if state.get(STATE_KEY) == 1:
            return state
        for value in state.values():
            if (found := find_state(value)) is not None:
                return found
    elif isinstance(state, list | tuple):
        for value in state:
            if (found := find_state(value)) is not None:
                return found
    return None

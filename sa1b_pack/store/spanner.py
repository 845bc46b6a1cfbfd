"""Global sample index <-> (part, local index): the one object that maps between them."""

from __future__ import annotations

import numpy as np


class Spanner:
    """Parts of ``sizes`` samples laid end to end; ``locate(i)`` finds sample ``i`` in O(log P)."""

    def __init__(self, sizes: list[int] | np.ndarray) -> None:
        sizes = np.asarray(sizes, dtype=np.int64)
        if (sizes < 0).any():
            raise ValueError("part sizes must be non-negative")
        self.ends = np.cumsum(sizes)
        self.starts = self.ends - sizes

    def __len__(self) -> int:
        return int(self.ends[-1]) if len(self.ends) else 0

    def locate(self, index: int) -> tuple[int, int]:
        """(part, local index) of global ``index``; negative indices count from the end."""
        total = len(self)
        if index < 0:
            index += total
        if not 0 <= index < total:
            raise IndexError(f"sample index {index} out of range for {total} samples")
        part = int(np.searchsorted(self.ends, index, side="right"))
        return part, index - int(self.starts[part])

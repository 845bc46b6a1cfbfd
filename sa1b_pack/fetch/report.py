"""What a fetch shows and returns (fetch/run.py): one total bar and a bar per file in flight,
and the report of what it did, shard by shard."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from tqdm import tqdm

from ..progress import progress_bar

BYTES = {"unit": "B", "unit_scale": True, "unit_divisor": 1024}


@dataclass
class FetchReport:
    """What a fetch did, by shard name; every failure comes with its reason."""

    downloaded: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)  # complete tars found on disk
    failed: dict[str, str] = field(default_factory=dict)  # could not download
    expired: list[str] = field(default_factory=list)  # of those, links to refresh
    packed: list[str] = field(default_factory=list)  # committed + verified in this run
    already_packed: list[str] = field(default_factory=list)  # committed by an earlier run
    pack_failed: dict[str, str] = field(default_factory=dict)  # tar kept
    deleted: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.pack_failed


class Bars:
    """A total bar (bytes, rate, ETA) on row 0 and one bar per file in flight on rows 2+
    (row 1 is fetch's packing bar). Off a terminal only the total is logged, now and then."""

    def __init__(self, total: int | None, initial: int, rows: int, enabled: bool) -> None:
        self.enabled, self.lock = enabled, threading.Lock()
        self.total = progress_bar(
            total=total, initial=initial, desc="download", position=0, enabled=enabled, **BYTES
        )
        self.rows: queue.SimpleQueue[int] = queue.SimpleQueue()
        for row in range(2, rows + 2):
            self.rows.put(row)

    @contextmanager
    def file(self, name: str, size: int | None) -> Iterator[Callable[[int], None]]:
        """A bar for one file; yields the ``progress`` callback of ``download``."""
        row = self.rows.get()
        bar: list[tqdm] = []
        last = [0]

        def update(done: int) -> None:
            if not bar:  # the first call states what the .part already held: not a rate
                bar.append(
                    progress_bar(
                        total=size,
                        initial=done,
                        desc=name,
                        position=row,
                        leave=False,
                        enabled=self.enabled,
                        log=False,
                        **BYTES,
                    )
                )
            else:
                with self.lock:
                    self.total.update(done - last[0])
                bar[0].update(done - last[0])
            last[0] = done

        try:
            yield update
        finally:
            if bar:
                bar[0].close()
            self.rows.put(row)

    def close(self) -> None:
        self.total.close()

"""Where a loader's time goes: each stage's time per sample, and how long the training loop
waited for its batches (SPDL's per-stage and queue statistics, for this fixed pipeline).

Recording takes no lock: each thread adds to its own accumulator (a list only it writes,
found by thread id) and ``StageTimes.totals`` sums them on read. A sample costs six
``perf_counter_ns`` calls and list updates against milliseconds of decoding (``make bench``,
question ``prompts``, measures it). Counts are per process: DataLoader workers keep their own.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from time import perf_counter_ns
from typing import Any

STAGES = ("read", "image", "masks", "prompts", "transform", "collate")
READ, IMAGE, MASKS, PROMPTS, TRANSFORM, COLLATE, WAIT, LOOP, FIRST = range(len(STAGES) + 3)
SLOTS = len(STAGES) + 3  # the stages, then the loop's wait, its own time and its first wait
LOADER_BOUND = 0.1  # the loader limits training when the loop waits this share of its time


class Lap:
    """One sample's stopwatch: ``lap(stage)`` adds the time since the last lap to ``stage``."""

    __slots__ = ("acc", "t")

    def __init__(self, acc: list[int]) -> None:
        self.acc, self.t = acc, perf_counter_ns()

    def __call__(self, stage: int) -> None:
        now = perf_counter_ns()
        self.acc[stage] += now - self.t
        self.acc[SLOTS + stage] += 1
        self.t = now


def no_lap(stage: int) -> None:
    """The stopwatch when statistics are off."""


class StageTimes:
    """Nanoseconds and counts per stage, added by any number of threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # taken when a thread first records, and on read
        self._by_thread: dict[int, tuple[threading.Thread, list[int]]] = {}
        self._retired = [0] * (2 * SLOTS)  # what threads that have ended recorded
        self._base = [0] * (2 * SLOTS)

    def _mine(self) -> list[int]:
        entry = self._by_thread.get(threading.get_ident())
        if entry is None or entry[0] is not threading.current_thread():
            entry = self._register()
        return entry[1]

    def _register(self) -> tuple[threading.Thread, list[int]]:
        """This thread's accumulator, folding those of ended threads (a loader starts new
        threads every epoch) into ``_retired``: they write no more, nothing is lost."""
        with self._lock:
            for ident, (thread, acc) in list(self._by_thread.items()):
                if not thread.is_alive():
                    self._retired = [a + b for a, b in zip(self._retired, acc, strict=True)]
                    del self._by_thread[ident]
            entry = (threading.current_thread(), [0] * (2 * SLOTS))
            self._by_thread[threading.get_ident()] = entry
        return entry

    def start(self) -> Lap:
        return Lap(self._mine())

    def add(self, stage: int, ns: int, count: int = 1) -> None:
        acc = self._mine()
        acc[stage] += ns
        acc[SLOTS + stage] += count

    def totals(self, reset: bool = False) -> list[int]:
        """Per slot: nanoseconds, then counts, since creation or the last reset."""
        with self._lock:
            accs = [self._retired, *(acc for _, acc in self._by_thread.values())]
        now = [sum(values) for values in zip(*accs, strict=True)]
        out = [a - b for a, b in zip(now, self._base, strict=True)]
        if reset:
            self._base = now
        return out

    def stats(self, reset: bool = False, threads: int = 0) -> LoaderStats:
        return LoaderStats.of(self.totals(reset), threads)

    def __getstate__(self) -> dict[str, Any]:  # a worker process starts its own counts
        return {"fresh": True}  # not empty: an empty state would skip __setstate__

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()


def timed(items: Iterable[Any], convert: Callable[[Any], Any], times: StageTimes | None
          ) -> Iterator[Any]:  # fmt: skip
    """``convert(item)`` for each item, recording the loop's side: the time from its asking
    to its getting the converted item (the first apart: start-up), its own time until it asks
    again, and ``convert``'s time under collate (uncounted: the batch's padding counted it)."""
    if times is None:
        yield from map(convert, items)
        return
    waited = FIRST
    asked = perf_counter_ns()
    for item in items:
        got = perf_counter_ns()
        out = convert(item)
        handed = perf_counter_ns()
        times.add(COLLATE, handed - got, count=0)
        times.add(waited, handed - asked)
        waited = WAIT
        yield out
        asked = perf_counter_ns()
        times.add(LOOP, asked - handed)


@dataclass(frozen=True)
class Stage:
    seconds: float  # summed over threads: can exceed wall time
    count: int
    ms_per_sample: float


@dataclass(frozen=True)
class LoaderStats:
    """Per-stage time (thread time, summed) and the training loop's waits.

    ``wait_s``: time the loop spent asking for a batch, after the first (``first_batch_s``,
    start-up); ``loop_s``: the loop's own time between batches (the model's step).
    """

    stages: dict[str, Stage]
    samples: int
    batches: int
    wait_s: float
    loop_s: float
    first_batch_s: float
    threads: int

    @classmethod
    def of(cls, totals: list[int], threads: int = 0) -> LoaderStats:
        ns, counts = totals[:SLOTS], totals[SLOTS:]
        samples = counts[READ]
        stages = {name: Stage(ns[i] / 1e9, counts[i], ns[i] / 1e6 / max(samples, 1))
                  for i, name in enumerate(STAGES)}  # fmt: skip
        return cls(stages, samples, counts[FIRST] + counts[WAIT], ns[WAIT] / 1e9,
                   ns[LOOP] / 1e9, ns[FIRST] / 1e9, threads)  # fmt: skip

    def summary(self) -> str:
        """One line: which side limits training, and each stage's ms per sample."""
        per = ", ".join(f"{n} {s.ms_per_sample:.2f}" for n, s in self.stages.items() if s.count)
        work = f"ms per sample: {per}" if per else "no samples yet"
        if self.threads:
            work += f" (thread time, {self.threads} threads)"
        steady = self.wait_s + self.loop_s
        if self.batches == 0:
            return f"no training loop timed (SA1BLoader times its loop); {work}"
        if steady <= 0:
            return f"one batch so far (start-up, {self.first_batch_s:.2f} s); {work}"
        share = self.wait_s / steady
        side = "the loader" if share >= LOADER_BOUND else "the model"
        top = max(self.stages.items(), key=lambda item: item[1].seconds)[0]
        return (f"{side} is the bottleneck: the loop waited {share:.0%} of its time for "
                f"batches ({self.wait_s:.2f} s of {steady:.2f} s, first batch aside); "
                f"{work}; most time in {top}")  # fmt: skip

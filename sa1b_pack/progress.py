"""Progress bars and messages, made one way for the whole project.

On a terminal, ``progress_bar`` is an ordinary tqdm bar. Off a terminal (a log file, a pipe, a
CI job) a redrawn bar only writes carriage returns and cursor escapes that pile up in the log,
so there it draws nothing and instead writes a plain line, "desc: 40% 4/10 [00:12<00:18, ...]",
at most once every ``LOG_EVERY`` seconds and once more when it closes (unless the last line
already showed the final count): a long fetch still shows in its log that it moves, and a short
run logs one line per bar. Bars that are details of another (one per file in flight beside a
total) pass ``log=False`` and stay silent off a terminal.

``say`` prints a message through ``tqdm.write``, which lifts the bars on a terminal and draws
them again below, so a message never lands in the middle of a bar.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

from tqdm import tqdm

LOG_EVERY = 60.0  # seconds between two plain lines of one bar, off a terminal


def progress_bar(
    iterable: Iterable[Any] | None = None,
    *,
    enabled: bool = True,
    log: bool = True,
    file: TextIO | None = None,
    **kwargs: Any,
) -> tqdm:
    """A tqdm bar (``total``, ``desc``, ``unit``, ``position``... as for tqdm) on a terminal;
    off one, plain lines (``log=True``) or nothing. ``enabled=False``: nothing anywhere.

    ``file`` defaults to ``sys.stderr`` as it is when the bar is made.
    """
    file = sys.stderr if file is None else file
    if not enabled or file is None:
        return tqdm(iterable, disable=True, **kwargs)
    if _is_terminal(file):
        return tqdm(iterable, file=file, **kwargs)
    if not log:
        return tqdm(iterable, disable=True, **kwargs)
    return _LogBar(iterable, file=file, **kwargs)


def worker_progress(stack: Any, bar: tqdm, processes: bool) -> Any:
    """A queue workers put counts into, drained into ``bar`` by a thread until ``stack``
    closes: a manager's queue for worker processes, a plain one for threads."""
    if processes:
        import multiprocessing

        queue = stack.enter_context(multiprocessing.Manager()).Queue()
    else:
        import queue as queue_module

        queue = queue_module.SimpleQueue()
    drainer = threading.Thread(target=_drain, args=(queue, bar), daemon=True)
    drainer.start()
    stack.callback(drainer.join)
    stack.callback(queue.put, None)
    return queue


def _drain(queue: Any, bar: tqdm) -> None:
    while (n := queue.get()) is not None:
        bar.update(n)


def say(message: str, file: TextIO | None = None) -> None:
    """Print a line to ``file`` (default: stderr) without breaking any bar drawn there."""
    tqdm.write(message, file=sys.stderr if file is None else file)


def _is_terminal(file: TextIO) -> bool:
    try:
        return file.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed file
        return False


class _LogBar(tqdm):
    """A disabled tqdm (so nothing is ever redrawn) that counts and writes plain lines."""

    def __init__(self, iterable: Iterable[Any] | None = None, *, file: TextIO, **kwargs: Any):
        kwargs.pop("disable", None)
        super().__init__(iterable, disable=True, file=file, **kwargs)
        self.desc = kwargs.get("desc") or ""
        self._out = file
        units = ("unit", "unit_scale", "unit_divisor", "initial")  # initial: not in the rate
        self._meter = {k: kwargs[k] for k in units if k in kwargs}
        self._start = self._last = time.monotonic()
        self._logged: float | None = None  # the count the last line showed
        self._closed = False

    def update(self, n: float | None = 1) -> bool | None:
        self.n += n
        now = time.monotonic()
        if now - self._last >= LOG_EVERY:
            self._line(now)
        return None

    def __iter__(self) -> Iterator[Any]:
        try:
            for obj in self.iterable:
                yield obj
                self.update(1)
        finally:
            self.close()

    def close(self) -> None:
        if not getattr(self, "_closed", True):
            self._closed = True
            if self._logged != self.n:  # else the last line already says it all
                self._line(time.monotonic())

    def _line(self, now: float) -> None:
        self._last, self._logged = now, self.n
        line = self.format_meter(
            self.n, self.total, now - self._start, ncols=0, prefix=self.desc, **self._meter
        )
        try:
            tqdm.write(line, file=self._out)
        except (ValueError, OSError):  # the stream closed first (interpreter exit)
            pass

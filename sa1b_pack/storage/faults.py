"""Crash points for the kill-and-resume tests: the packer SIGKILLs itself where told to.

``SA1B_PACK_CRASH_AT=name`` (or ``name@k``: the k-th time) makes a run die at that point as a
power cut or the OOM killer would, so tests can prove a store is consistent at every step of
a commit. Unset, a crash point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

_reached: Counter[str] = Counter()


def crash_point(name: str) -> None:
    wanted = os.environ.get("SA1B_PACK_CRASH_AT")
    if not wanted:
        return
    point, _, nth = wanted.partition("@")
    if point != name:
        return
    _reached[name] += 1
    if _reached[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)

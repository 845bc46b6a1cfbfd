"""Will the fetch fit? Free space of the disks that hold the tars and the store, planned before
any download."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tqdm import tqdm

from ..errors import SA1BPackError

STORE_PER_TAR_BYTE = 1.0  # store bytes / tar bytes: `make bench`, docs/benchmarks.md#pack
TYPICAL_SHARD_BYTES = 11 * 10**9  # for a shard whose server does not state its size
HEADROOM = 1 << 30  # never plan to fill a disk to the last byte


class DiskSpaceError(SA1BPackError):
    """The chosen shards (and store) do not fit in the free space; nothing was fetched."""


def _free(path: Path) -> tuple[int, int]:
    """(device, free bytes) of the filesystem that holds ``path`` or would hold it."""
    while not path.exists():
        path = path.parent
    return os.stat(path).st_dev, shutil.disk_usage(path).free


def check_disk(
    src: Path, dst: Path | None, tar_bytes: int, store_bytes: int, force: bool, hint: str
) -> str:
    """Refuse (DiskSpaceError) unless the tars fit under ``src`` and the store under ``dst``,
    together if they share a disk; returns the plan, for the log."""
    free: dict[int, tuple[int, Path]] = {}
    need: dict[int, int] = {}
    for path, size in ((src, tar_bytes), (dst, store_bytes)):
        if path is not None:
            device, space = _free(path)
            free.setdefault(device, (space, path))
            need[device] = need.get(device, HEADROOM) + size
    plan = f"needs {_human(tar_bytes)} for tars"
    plan += f" + {_human(store_bytes)} for the store" if dst is not None else ""
    for device, (space, path) in free.items():
        if need[device] > space and not force:
            raise DiskSpaceError(
                f"not enough disk: the fetch {plan} (+{_human(HEADROOM)} headroom), and the "
                f"disk of {path} has {_human(space)} free. Fetch fewer --shards, free "
                f"space{hint}, or pass --force"
            )
    return plan


def _human(size: float) -> str:
    return tqdm.format_sizeof(size, "B")

"""Download SA-1B from Meta's links file, resumably, packing shards as they land:
``from sa1b_pack.fetch import fetch``. Names load on first use (as in ``sa1b_pack``)."""

from __future__ import annotations

import importlib
from typing import Any

_HOME = {
    "DiskSpaceError": "disk",
    "DownloadError": "download",
    "ExpiredLinksError": "links",
    "FetchReport": "report",
    "Http": "download",
    "Log": "download",
    "fetch": "run",
    "read_links": "links",
}
__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'sa1b_pack.fetch' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)

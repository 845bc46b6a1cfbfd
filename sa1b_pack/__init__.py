"""sa1b_pack: pack SA-1B tar shards into a Parquet + memmap store and read any sample fast.

Names are loaded on first use (PEP 562), so ``import sa1b_pack`` and the light commands
(``sa1b-pack --help``, ``info``, ``errors``, ``fetch``) do not import numba, pyarrow or cv2.
Every name a user needs is here (the PyTorch side in ``sa1b_pack.torch``); the errors are
also ``sa1b_pack.errors``, and the download tool is ``from sa1b_pack.fetch import fetch``.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOME = {
    "AnnotationError": "errors",
    "AttachReport": "write.attach",
    "ConfigError": "errors",
    "FORMAT_VERSION": "format.files",
    "PackReport": "write.packer",
    "Packer": "write.packer",
    "SA1BPackError": "errors",
    "Sample": "read.reader",
    "ShardError": "source.shards",
    "Store": "read.reader",
    "StoreError": "errors",
    "attach": "write.attach",
    "attach_dir": "write.attach",
    "detach": "write.attach",
    "find_shards": "source.shards",
    "open_store": "read.reader",
    "pack": "write.packer",
    "parse_shards": "source.shards",
    "save_sample_png": "render",
    "verify": "read.verify",
}
__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'sa1b_pack' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])

"""Where a store's files live: a local folder or object storage, behind one interface.

``storage_for(url)`` picks the backend once, from the URL (the way MosaicML Streaming picks
an uploader); everything above talks to ``Storage`` (base.py) and never asks which it is.
This package imports no numpy or pyarrow: the manifest-only commands use it.
"""

from __future__ import annotations

import os

import fsspec

from .base import RequestStats, Storage
from .cache import PartCache
from .local import LocalStorage
from .objects import ObjectStorage

__all__ = ["LocalStorage", "ObjectStorage", "PartCache", "RequestStats", "Storage", "storage_for"]


def storage_for(root: str | os.PathLike | Storage, cache: PartCache | None = None) -> Storage:
    """The backend for a store URL or path: chosen here, and only here. ``cache`` keeps
    whole parts of a store on object storage on local disk; a local store needs none and
    ignores it."""
    if isinstance(root, Storage):
        return root
    url = os.fspath(root)
    protocol = fsspec.core.split_protocol(url)[0]
    if protocol in (None, "file", "local"):
        return LocalStorage(fsspec.core.strip_protocol(url) if protocol else url)
    return ObjectStorage(url.rstrip("/"), cache)

"""sa1b_pack: pack SA-1B tar shards into a Parquet + memmap store and read any sample fast."""

from .format import FORMAT_VERSION
from .manifest import StoreError
from .pack import PackReport, pack
from .shards import ShardError, parse_shards
from .store import Sample, Store, open_store

__all__ = [
    "FORMAT_VERSION",
    "PackReport",
    "Sample",
    "ShardError",
    "Store",
    "StoreError",
    "open_store",
    "pack",
    "parse_shards",
]

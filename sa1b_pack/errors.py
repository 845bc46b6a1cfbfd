"""The library's own errors share one base, ``SA1BPackError``: ``except SA1BPackError`` catches
anything sa1b_pack raises on purpose. Each keeps the builtin base it had (a ``ConfigError`` or
an ``AnnotationError`` is still a ``ValueError``), so existing handlers keep working. The
errors of one layer only (ShardError, DownloadError, SampleError...) live with that layer;
the ones raised across the library live here. Light: no imports."""


class SA1BPackError(Exception):
    """Base of every error sa1b_pack raises on purpose."""


class StoreError(SA1BPackError):
    """A store that is missing, locked, corrupt or of another format version, or that lacks
    what was asked of it (an attached array it does not hold)."""


class ConfigError(SA1BPackError, ValueError):
    """A bad argument, option or recipe: the caller asked for something that cannot be."""


class AnnotationError(SA1BPackError, ValueError):
    """A malformed annotation (or COCO RLE string); the message says which field and why."""

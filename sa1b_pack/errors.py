"""The library's own errors share one base, ``SA1BPackError``: ``except SA1BPackError`` catches
anything sa1b_pack raises on purpose. Each keeps the builtin base it had (an ``AnnotationError``
is still a ``ValueError``), so existing handlers keep working. Light: no imports."""


class SA1BPackError(Exception):
    """Base of every error sa1b_pack raises on purpose."""


class StoreError(SA1BPackError):
    """A store that is missing, locked, corrupt or of another format version."""

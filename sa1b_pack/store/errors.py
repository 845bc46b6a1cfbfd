"""The store's one error type, in a module of its own so light callers can catch it."""


class StoreError(Exception):
    """A store that is missing, locked, corrupt or of another format version."""

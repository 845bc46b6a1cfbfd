"""Where joblib runs the per-shard work: local processes, or a Dask cluster; the only module
that imports dask. The pack code path is the same for both (``joblib.Parallel`` over
``writer.write_part``); only the backend around it changes."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

from joblib import parallel_config

from ..errors import ConfigError

BACKENDS = ("loky", "dask")


def backend_context(backend: str, scheduler: str | None) -> AbstractContextManager:
    """Context in which ``joblib.Parallel`` runs on ``backend``; connects to a Dask scheduler.

    With ``dask`` and no ``scheduler``, an already connected ``dask.distributed.Client`` is
    used (e.g. a ``LocalCluster`` the caller started). Workers must reach SRC and DST.
    """
    if backend == "loky":
        return nullcontext()
    if backend != "dask":
        raise ConfigError(f"backend must be one of {BACKENDS}, got {backend!r}")
    try:
        from dask.distributed import Client
    except ImportError:
        raise ConfigError("the dask backend needs `pip install sa1b-pack[dask]`") from None
    if scheduler:
        Client(scheduler)  # becomes the default client that joblib's dask backend uses
    else:
        try:
            Client.current()
        except ValueError:
            raise ConfigError("backend dask: give --scheduler tcp://host:8786") from None
    return parallel_config(backend="dask")

"""The eligible-image index, persisted: built once per store contents, recipe filters and
subset, memory-mapped at every later start.

Why: the index of the images with a mask passing the recipe's filters reads every part's
per-mask columns, ~37 ms per million masks (~41 s at SA-1B's 1.1 B masks), and every job
start and every restart after a preemption paid it again. Loaded from its file it costs a
manifest read and a checksum of the index (O(parts) + ~5 ms per million images).

The file, ``<key>-<checksum>.npy`` (int64, what ``eligible_images`` returns, intersected
with the subset), lives beside a local store (``<store>/index/``), else (a read-only store,
object storage) in the part cache's directory (``<cache_dir>/index/``) or the user's cache
(``$SA1B_PACK_INDEX_DIR``, default ``~/.cache/sa1b_pack/index``). ``key`` is a sha256 of
what the index depends on and nothing else: each part's name, row counts and the sha256 of
its two Arrow tables (from the manifest), the filter thresholds (``recipe.FILTERS``) and the
subset's ids. A new, replaced or re-packed shard gives another key, so a stale index is never
found; an attach changes no table and keeps it. The checksum (sha256 of the data) is checked
on every load: a truncated or corrupt file is deleted and rebuilt, never used. Files are
written atomically (temp + fsync + rename), so concurrent ranks may build and write the same
index at once. Old files are never deleted here (a running job may still map one): remove an
``index/`` folder whenever no job reads the store.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import orjson

from ..format.files import ANNOTATIONS_ARROW, IMAGES_ARROW
from ..read.reader import Store
from ..storage.local import LocalStorage
from ..store.subset import ids_digest, read_ids
from .recipe import FILTERS, Recipe, eligible_images

logger = logging.getLogger("sa1b_pack")
INDEX_DIR = "index"
INDEX_VERSION = 1  # bump when what eligible_images computes changes
Where = bool | str | os.PathLike  # True: the default folders; False: none; or one folder
ImageIds = str | os.PathLike | Iterable[int | str] | None


def eligible_index(
    store: Store, recipe: Recipe, subset: ImageIds = None, where: Where = True
) -> tuple[np.ndarray, Path | None]:
    """The eligible images' global indices (sorted int64; only those in ``subset`` if
    given: KeyError if the store lacks some) and the file holding them: loaded if persisted,
    else built and persisted in the first folder of ``where`` that can be written (the path
    is None if none could)."""
    ids = None if subset is None else read_ids(subset)
    folders = index_folders(store, where)
    key = index_key(store, recipe, ids) if folders else ""
    for folder in folders:
        if (found := load_index(folder, key)) is not None:
            return found
    t0 = time.perf_counter()
    index = eligible_images(store, recipe)
    if ids is not None:  # a named subset, composed with the quality filters
        index = np.intersect1d(index, store.subset(ids))
    built = time.perf_counter() - t0
    for folder in folders:
        try:
            path = save_index(folder, key, index)
        except OSError as exc:  # read-only, full, not ours: try the next folder
            logger.debug("eligible index not saved in %s: %s", folder, exc)
            continue
        logger.info("eligible index of %s built in %.2f s, saved as %s", store.url, built, path)
        return load_index(folder, key) or (index, None)
    return index, None


def index_key(store: Store, recipe: Recipe, ids: np.ndarray | None) -> str:
    """What the index depends on, hashed: the parts' tables, the filters, the subset."""
    parts = []
    for name in store.shards:
        entry = store.manifest["shards"][name]
        tables = [entry["files"][f]["sha256"] for f in (IMAGES_ARROW, ANNOTATIONS_ARROW)]
        parts.append([name, entry["images"], entry["masks"], *tables])
    filters = [float(getattr(recipe, f)).hex() for f in FILTERS]  # exact: 0.88 is not 0.8800001
    what = [INDEX_VERSION, parts, filters, None if ids is None else ids_digest(ids)]
    return hashlib.sha256(orjson.dumps(what)).hexdigest()[:32]


def index_folders(store: Store, where: Where = True) -> list[Path]:
    """Where the index is looked for and saved, in that order."""
    if where is False:
        return []
    if where is not True:
        return [Path(where)]
    folders = []
    if isinstance(store.storage, LocalStorage):
        folders.append(store.storage.root / INDEX_DIR)
    if store.storage.cache is not None:
        folders.append(store.storage.cache.directory / INDEX_DIR)
    user = os.environ.get("SA1B_PACK_INDEX_DIR")
    cache_home = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    folders.append(Path(user) if user else Path(cache_home) / "sa1b_pack" / INDEX_DIR)
    return folders


def checksum(index: np.ndarray) -> str:
    return hashlib.sha256(memoryview(np.ascontiguousarray(index))).hexdigest()[:16]


def load_index(folder: Path, key: str) -> tuple[np.ndarray, Path] | None:
    """The persisted index of ``key`` in ``folder``, memory-mapped, if a file of it is whole
    (its checksum matches); files that are not are deleted (when we may)."""
    for path in sorted(folder.glob(f"{key}-*.npy")):
        try:
            index = np.load(path, mmap_mode="r", allow_pickle=False)
            whole = (index.dtype == np.dtype("<i8") and index.ndim == 1
                     and checksum(index) == path.stem.rpartition("-")[2])  # fmt: skip
        except (OSError, ValueError):
            whole = False
        if whole:
            return index, path
        logger.warning("eligible index %s is damaged: rebuilding it", path)
        with contextlib.suppress(OSError):
            path.unlink()
    return None


def save_index(folder: Path, key: str, index: np.ndarray) -> Path:
    """Write ``index`` as ``<folder>/<key>-<checksum>.npy`` atomically; OSError if we can't."""
    data = np.ascontiguousarray(index, "<i8")
    final = folder / f"{key}-{checksum(data)}.npy"
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        with open(tmp, "wb") as f:
            np.save(f, data, allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return final

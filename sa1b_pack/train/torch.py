"""PyTorch adapter (``pip install sa1b-pack[torch]``): a map-style Dataset over a packed store
for SAM-style training and a resumable, elastic DistributedSampler replacement (SA1BSampler,
logic in sampler.py and nodes.py); the threaded loader is in loader.py, collate in collate.py.
The torch-using modules of train/ are these, device*.py and gpu_jpeg.py.
Workers open the store's memory maps lazily, each in its own
process (fork or spawn); what is pickled to them is the store path, the recipe and the index
of eligible images. A large index goes as the path of its persisted file (train/index.py),
which the workers memory-map; one that could not be persisted goes through a temp .npy file,
written once per dataset, however often it is pickled (spawn pickles it per worker per
epoch), and deleted when that dataset is garbage-collected or the interpreter exits.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import tempfile
import time
import weakref
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from ..errors import ConfigError
from ..read.reader import Store, open_store
from ..store.order import DEFAULT_WINDOW
from ..write.attach import attached_specs
from . import fields
from .index import eligible_index
from .prefetch import RELEASE_AFTER
from .recipe import Recipe, training_sample
from .sampler import EpochSampler
from .stats import COLLATE, LoaderStats, StageTimes

logger = logging.getLogger("sa1b_pack")
SPILL_ABOVE = 1 << 20  # index entries pickled inline up to this many, else via a .npy file
RECIPE_FIELDS = tuple(f.name for f in dataclasses.fields(Recipe))


class _Spill(NamedTuple):
    """``index`` as written to ``path``; ``owner`` deletes the file (None in unpickled copies)."""

    index: np.ndarray
    path: str
    owner: weakref.finalize | None


def _remove_spill(path: str, pid: int) -> None:
    if os.getpid() == pid:  # not from a forked child that inherited the dataset
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


class SA1BDataset(Dataset):
    """SA-1B samples for SAM-style training: image, K sampled masks, boxes, points, quality.

    ``store`` is a store's path or URL, or an open ``Store``; ``cache_dir`` + ``cache_bytes``
    read object storage through a local cache of whole parts (as ``open_store``; workers get
    the same options). ``recipe`` (default ``Recipe()``) says what a sample is; keywords named
    like its fields (``image_size``, ``max_masks``, ``min_area``, ``seed``...) override them, so
    ``SA1BDataset(store, image_size=1024, max_masks=64)`` needs no Recipe. ``float_image``:
    images as float32 in [0, 1] instead of uint8. ``subset``: train on a named subset
    only (image ids or ``sa_<N>.jpg`` names, or a text file of them, one per line, as
    EdgeSAM ships its 1 % list); KeyError if the store lacks some of them.
    ``attached=["teacher"]``: each sample also carries the arrays attached under those names
    (``sa1b-pack attach``) as tensors of their dtype and shape, with ``"<name>_present"``
    False where the image had none (zeros). ``relations=True`` (a Recipe field) adds iou,
    containment (K, K), centroids, orig_centroids (K, 2) and scale_level (K,).
    ``index_cache``: where the index of eligible images is persisted and found again at the
    next start (train/index.py): True, beside the store or in a cache folder; a folder; or
    False, built anew every time.

    ``transform(sample, rng)`` and ``mask_transform(masks, mask_input_size, rng)`` augment
    each decoded sample (numpy, before it becomes tensors), in ``SA1BLoader`` too; they must
    keep the output shape and the fields consistent: the contract is in train/transforms.py.

    Images with no mask passing the filters are skipped when the dataset is built, so
    ``len(ds)`` counts only usable images. Mask draws depend on (seed, epoch, image): call
    ``set_epoch(e)`` before iterating epoch ``e`` (with ``persistent_workers=False``, the
    default, workers pick it up when the epoch's iterator is created).

    ``stats()``: time per stage of the samples made *in this process* (train/stats.py): all
    of them with ``num_workers=0``, none with workers (each worker counts its own);
    ``stats=False`` turns recording off.
    """

    def __init__(
        self,
        store: str | os.PathLike | Store,
        recipe: Recipe | None = None,
        *,
        cache_dir: str | os.PathLike | None = None,
        cache_bytes: int | None = None,
        float_image: bool = False,
        subset: str | os.PathLike | Iterable[int | str] | None = None,
        attached: Sequence[str] = (),
        transform: Any = None,
        mask_transform: Any = None,
        index_cache: bool | str | os.PathLike = True,
        stats: bool = True,
        **recipe_fields: Any,
    ) -> None:
        if recipe is not None and not isinstance(recipe, Recipe):
            raise TypeError(f"recipe must be a Recipe, got {type(recipe).__name__}")
        if unknown := sorted(set(recipe_fields) - set(RECIPE_FIELDS)):
            raise TypeError(
                f"SA1BDataset got unknown keyword(s) {', '.join(unknown)}; "
                f"Recipe fields are {', '.join(RECIPE_FIELDS)}"
            )
        if isinstance(store, Store):
            self.store = store
        else:
            self.store = open_store(store, cache_dir=cache_dir, cache_bytes=cache_bytes)
        self.url = self.store.url
        self.recipe = dataclasses.replace(recipe or Recipe(), **recipe_fields)
        self.float_image = float_image
        self.attached = attached_specs(self.store, attached)
        if clash := [n for n in attached if n in fields.BATCH_KEYS or n.endswith("_present")]:
            raise ConfigError(f"attached arrays {clash} would replace batch keys")
        self.transform, self.mask_transform = transform, mask_transform
        self.stage_times = StageTimes() if stats else None
        self.epoch = 0
        self.index, path = eligible_index(self.store, self.recipe, subset, index_cache)
        self._spill = _Spill(self.index, str(path), None) if path else None  # never deleted
        size = self.recipe.image_size
        if self.store.image_longest == size:
            quality = self.store.manifest.get("resized_quality")
            self.image_source = f"pre-resized {size} px JPEGs (quality {quality})"
        else:
            self.image_source = "full-size JPEGs, decoded and resized per sample"
        logger.info("SA1BDataset %s: %d images, using %s", self.url, len(self), self.image_source)

    def __repr__(self) -> str:
        return f"SA1BDataset({self.url!r}, images={len(self)}, images from {self.image_source})"

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        """Sample ``i`` of the current epoch, or ``(i, epoch)`` as ``SA1BSampler`` yields
        them (the epoch travels with the index, so persistent workers follow it)."""
        i, epoch = key if isinstance(key, tuple) else (key, self.epoch)
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} samples")
        transforms = {"transform": self.transform, "mask_transform": self.mask_transform}
        sample = training_sample(self.store, int(self.index[i]), self.recipe, epoch, **transforms,
                                 stages=self.stage_times)  # fmt: skip
        t0 = time.perf_counter_ns()
        image = torch.from_numpy(sample["image"]).permute(2, 0, 1)
        if self.float_image:
            image = image.float().div_(255.0)
        extra = {}
        if self.attached:
            s = self.store[int(self.index[i])]
            for name in self.attached:
                extra[name] = torch.from_numpy(s.attached(name).copy())
                extra[f"{name}_present"] = torch.tensor(s.attached_present(name))
        relations = self.recipe.relations
        dtypes = {f: dtype for f, (dtype, _) in fields.per_mask(relations).items()}
        dtypes.update(fields.pairwise(relations))
        item = {
            "image": image,
            "masks": torch.from_numpy(sample["masks"]),
            **{f: torch.from_numpy(np.asarray(sample[f], dtype)) for f, dtype in dtypes.items()},
            "image_id": sample["image_id"],
            **{f: torch.tensor(sample[f], dtype=torch.int64) for f in fields.SIZES},
            **extra,
        }
        if self.stage_times is not None:  # to tensors: this path's share of "collate"
            self.stage_times.add(COLLATE, time.perf_counter_ns() - t0)
        return item

    def stats(self, reset: bool = False) -> LoaderStats:
        """Stage times of the samples made in this process (zeros with stats=False)."""
        return (self.stage_times or StageTimes()).stats(reset)

    def __getstate__(self) -> dict[str, Any]:
        # the store pickles as its URL and options (open parts stay behind)
        state = {k: v for k, v in self.__dict__.items() if k not in ("index", "_spill")}
        if len(self.index) > SPILL_ABOVE:
            state["index_file"] = self._spill_file()
        else:
            state["index"] = np.asarray(self.index)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        path = state.pop("index_file", None)
        self.__dict__.update(state)
        self._spill = None
        if path is not None:  # the file belongs to the dataset that was pickled: only map it
            self.index = np.load(path, mmap_mode="r")
            self._spill = _Spill(self.index, path, None)

    def _spill_file(self) -> str:
        """The path of ``index`` as a .npy file, written on the first call only (again if
        ``index`` was replaced or the file removed)."""
        spill = self._spill
        if spill is not None and spill.index is self.index and os.path.exists(spill.path):
            return spill.path
        if spill is not None and spill.owner is not None:
            spill.owner()  # the old file describes an index no longer in use
        fd, path = tempfile.mkstemp(prefix="sa1b_index_", suffix=".npy")
        with os.fdopen(fd, "wb") as f:
            np.save(f, np.asarray(self.index))
        owner = weakref.finalize(self, _remove_spill, path, os.getpid())
        self._spill = _Spill(self.index, path, owner)
        return path


class SA1BSampler(EpochSampler, Sampler):
    """A drop-in for ``DistributedSampler`` with a resumable, elastic epoch order.

    ``SA1BSampler(dataset, num_replicas=None, rank=None, seed=0, shuffle=True,
    order="uniform" | "blocks" | "nodes", window=8, drop_last=False, ranks_per_node=None,
    partitions=None)``: replicas and rank default to the process group (or 1 and 0 without
    one). ``uniform``/``blocks``: rank r of W takes global positions r, r + W, ... of epoch
    ``e``'s order, a function of (seed, epoch) only. ``nodes``: each part is read by one node
    (rank // ranks_per_node, default ``LOCAL_WORLD_SIZE``), for a part cache per node
    (train/nodes.py, docs/nodes.md). ``set_epoch(e)`` also sets the dataset's epoch, and every
    index carries its epoch to the workers (persistent ones too). ``state_dict()`` /
    ``load_state_dict()``: see train/sampler.py and docs/reading-and-training.md, "Resume".
    """

    def __init__(
        self,
        dataset: Any,
        num_replicas: int | None = None,
        rank: int | None = None,
        *,
        seed: int = 0,
        shuffle: bool = True,
        order: str = "uniform",
        window: int = DEFAULT_WINDOW,
        drop_last: bool = False,
        ranks_per_node: int | None = None,
        partitions: int | None = None,
        release_after: int = RELEASE_AFTER,
    ) -> None:
        group = torch.distributed.is_available() and torch.distributed.is_initialized()
        if num_replicas is None:
            num_replicas = torch.distributed.get_world_size() if group else 1
        if rank is None:
            rank = torch.distributed.get_rank() if group else 0
        super().__init__(dataset, num_replicas, rank, seed=seed, shuffle=shuffle, order=order,
                         window=window, drop_last=drop_last, ranks_per_node=ranks_per_node,
                         partitions=partitions, release_after=release_after)  # fmt: skip

"""PyTorch adapter, the only module that imports torch (``pip install sa1b-pack[torch]``).

A map-style Dataset over a packed store for SAM-style training, a resumable, elastic
DistributedSampler replacement (SA1BSampler, logic in sampler.py), and a collate function that
pads the per-image mask count. Workers open the store's memory maps lazily, each in its own
process (fork or spawn); what is pickled to them is the store path, the recipe and the index
of eligible images. A large index goes as the path of its persisted file (train/index.py),
which the workers memory-map; one that could not be persisted goes through a temp .npy file,
written once per dataset, however often it is pickled (spawn pickles it per worker per
epoch), and deleted when that dataset is garbage-collected or the interpreter exits.
"""

from __future__ import annotations

import contextlib
import ctypes
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
from ..write.attach import attached_specs
from . import fields
from .device import DeviceStage
from .index import eligible_index
from .recipe import Recipe, training_sample
from .sampler import EpochSampler
from .stats import COLLATE, LoaderStats, StageTimes, timed
from .threaded import batch_count, threaded_batches

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
    ``load_state_dict()``: see train/sampler.py and the README's "Resume" section.
    """

    def __init__(
        self, dataset: Any, num_replicas: int | None = None, rank: int | None = None, **options
    ) -> None:
        """``options``: seed, shuffle, order, window, drop_last, ranks_per_node, partitions,
        release_after, as ``EpochSampler``'s."""
        group = torch.distributed.is_available() and torch.distributed.is_initialized()
        if num_replicas is None:
            num_replicas = torch.distributed.get_world_size() if group else 1
        if rank is None:
            rank = torch.distributed.get_rank() if group else 0
        super().__init__(dataset, num_replicas, rank, **options)


class SA1BLoader:
    """Batches in ``collate``'s format, made by ``threads`` threads of this process, each
    sample decoded straight into its slot of a reused batch buffer (train/threaded.py).

    ``sampler``: an ``SA1BSampler`` (resume: ``state_dict``/``load_state_dict`` here are the
    sampler's state exactly after the last batch yielded) or any iterable of indices;
    without one, ``shuffle`` draws a permutation from (recipe seed, epoch). The batches equal
    ``DataLoader(dataset, sampler=..., collate_fn=collate)``'s for the same sampler,
    whatever ``threads``; images come as a channels-last view (same shape and values).
    **A batch is valid until the loader has yielded ``prefetch`` more** (its buffer is then
    refilled): keep what you need longer with ``copy=True`` or ``.clone()``. An exception in a
    sample surfaces in the consumer as ``SampleError`` naming the sample's index and image id;
    ``break`` or an exception in the loop stops every thread before the loop ends.
    ``stats()`` says where the time goes (per-stage time, the loop's waits; train/stats.py);
    ``stats=False`` turns recording off.
    ``device="cuda"``: images and masks are decoded on the GPU from the JPEG bytes and the
    masks' runs, batches come as fresh device tensors (valid indefinitely; ``copy`` and
    ``pin_memory`` do not apply), ``device_stats`` counts CPU fallbacks: train/device.py.
    """

    def __init__(
        self,
        dataset: SA1BDataset,
        batch_size: int,
        *,
        threads: int | None = None,
        sampler: Any = None,
        shuffle: bool = False,
        drop_last: bool = False,
        pin_memory: bool = False,
        prefetch: int = 2,
        copy: bool = False,
        stats: bool = True,
        device: str | torch.device | None = None,
    ) -> None:
        if batch_size < 1 or prefetch < 1:
            raise ConfigError("batch_size and prefetch must be at least 1")
        if sampler is not None and shuffle:
            raise ConfigError("give a sampler or shuffle=True, not both")
        self.dataset, self.batch_size, self.sampler = dataset, batch_size, sampler
        self.threads = threads or os.cpu_count() or 1
        self.shuffle, self.drop_last, self.prefetch, self.copy = shuffle, drop_last, prefetch, copy
        self.pin_memory = pin_memory and torch.cuda.is_available()
        if pin_memory and not self.pin_memory:
            logger.warning("SA1BLoader: pin_memory needs a CUDA device; batches are not pinned")
        self._state: dict[str, Any] | None = None
        self.stage_times = StageTimes() if stats else None
        self._device = None if device is None else DeviceStage(dataset, device)

    def stats(self, reset: bool = False) -> LoaderStats:
        """Per-stage time of every sample and batch so far, and the loop's waits
        (``.summary()``: which side is the bottleneck); ``reset`` starts counting afresh."""
        return (self.stage_times or StageTimes()).stats(reset, self.threads)

    @property
    def device_stats(self) -> dict[str, Any]:
        """Where the device stage decoded each image (train/device.py); {} without one."""
        return self._device.stats if self._device is not None else {}

    def __len__(self) -> int:
        return batch_count(len(self.sampler or self.dataset), self.batch_size, self.drop_last)

    def set_epoch(self, epoch: int) -> None:
        (self.sampler if hasattr(self.sampler, "set_epoch") else self.dataset).set_epoch(epoch)

    def state_dict(self) -> dict[str, Any]:
        """The sampler's state after the last batch this loader yielded."""
        if not hasattr(self.sampler, "state_dict"):
            raise TypeError("state_dict needs a sampler that has one (SA1BSampler)")
        return self._state if self._state is not None else self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state)

    def _keys(self) -> Any:
        if self.sampler is not None:
            return self.sampler
        n, epoch = len(self.dataset), self.dataset.epoch
        if self.shuffle:
            return np.random.default_rng((self.dataset.recipe.seed, epoch)).permutation(n)
        return range(n)

    def __iter__(self) -> Any:
        snapshot = getattr(self.sampler, "state_dict", None)
        stage = self._device
        batches = threaded_batches(self.dataset, self._keys(), self.batch_size,
                                   threads=self.threads, prefetch=self.prefetch,
                                   drop_last=self.drop_last, snapshot=snapshot,
                                   stages=self.stage_times,
                                   buffer=stage.buffer if stage else None)  # fmt: skip
        try:
            if stage is not None:  # batches finished on the device: fresh tensors each
                for batch, state in stage.batches(batches):
                    self._state = state
                    yield batch
                return
            yield from timed(batches, self._handed, self.stage_times)
        finally:
            batches.close()

    def _handed(self, pair: tuple[dict[str, np.ndarray], Any]) -> dict[str, torch.Tensor]:
        arrays, self._state = pair
        return self._tensors(arrays)

    def _tensors(self, arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        out = {k: torch.from_numpy(v) for k, v in arrays.items()}
        out["image"] = out["image"].permute(0, 3, 1, 2)  # a view: (B, 3, S, S), channels last
        if self.dataset.float_image:
            out["image"] = out["image"].float().div_(255.0)
        if self.copy:
            out = {k: v.clone() for k, v in out.items()}
        if self.pin_memory:
            out = {k: v.pin_memory() for k, v in out.items()}
        return out


PER_MASK = tuple(fields.PER_MASK)


try:
    _malloc_trim = ctypes.CDLL(None).malloc_trim  # glibc
except (AttributeError, OSError):  # another libc: nothing to do
    _malloc_trim = None


def release_freed_memory() -> None:
    """Return freed heap memory to the kernel (glibc ``malloc_trim``); opt-in.

    Why: each sample allocates a few MB of arrays of varying size (K masks); glibc keeps what
    they free for reuse, so a persistent DataLoader worker's RSS climbs over the first epochs
    before it levels off. Calling this once per batch in the worker (a ``collate_fn`` that
    calls it, then ``collate``) about halves that rise, but every sample then touches fresh
    pages: fewer samples/s where that is slow (README, "Memory over long runs")."""
    if _malloc_trim is not None:
        _malloc_trim(0)


def collate(batch: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack a batch, padding masks and per-mask fields to the batch's largest K.

    ``mask_valid`` (B, K) marks real masks; padded masks are all False, padded numbers 0
    (``point_labels`` -1; pairwise relations, (B, K, K), are padded on both axes). Attached
    arrays are stacked: (B, *shape).
    """
    size = batch[0]["masks"].shape[1:]
    k = max(len(s["masks"]) for s in batch)
    masks = torch.zeros((len(batch), k, *size), dtype=torch.bool)
    valid = torch.zeros((len(batch), k), dtype=torch.bool)
    per_mask = [f for f in [*fields.PER_MASK, *fields.RELATIONS] if f in batch[0]]
    pairwise = [f for f in fields.PAIRWISE if f in batch[0]]
    out: dict[str, Any] = {
        f: torch.full((len(batch), k, *one.shape[1:]), fields.PAD.get(f, 0), dtype=one.dtype)
        for f, one in ((f, batch[0][f]) for f in per_mask)
    }
    out.update({f: torch.zeros((len(batch), k, k), dtype=batch[0][f].dtype) for f in pairwise})
    for b, s in enumerate(batch):
        n = len(s["masks"])
        masks[b, :n] = s["masks"]
        valid[b, :n] = True
        for f in per_mask:
            out[f][b, :n] = s[f]
        for f in pairwise:
            out[f][b, :n, :n] = s[f]
    out["image"] = torch.stack([s["image"] for s in batch])
    out["masks"] = masks
    out["mask_valid"] = valid
    out["image_id"] = torch.tensor([s["image_id"] for s in batch], dtype=torch.int64)
    for f in fields.SIZES:
        out[f] = torch.stack([s[f] for s in batch])
    for key in batch[0].keys() - out.keys():  # attached arrays and their presence flags
        out[key] = torch.stack([s[key] for s in batch])
    return out

"""Batches made by threads of the calling process, each sample decoded straight into its slot
of a reused batch buffer (numpy; ``sa1b_pack.torch.SA1BLoader`` hands them out as tensors).

Why threads: the per-sample work (DCT-scaled JPEG decode, OpenCV resize, numba mask decode)
releases the GIL, so threads run it in parallel without what worker processes cost: a copy of
every image and mask through shared memory into fresh pages of the main process, and a full
interpreter per worker.

Buffers: a ring of ``2 * prefetch`` batch buffers; ``prefetch`` batches are being filled while
the consumer holds the ones yielded before. A yielded batch stays valid until the loader has
yielded ``prefetch`` more (then its buffer is refilled); take copies to keep it longer.
Samples fill slots in any order, batches come out in sampler order, so the batches equal
``DataLoader(dataset, sampler=..., collate_fn=collate)``'s whatever the thread count.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from ..errors import SA1BPackError
from . import fields
from .recipe import Recipe, training_sample
from .stats import COLLATE, StageTimes

Attached = dict[str, tuple[np.dtype, tuple[int, ...]]]  # name -> (dtype, per-image shape)


class SampleError(SA1BPackError, RuntimeError):
    """A sample failed in a loader thread; says which (dataset index and image id)."""


class BatchBuffer:
    """One batch's arrays, allocated once and refilled; ``capacity`` masks per sample."""

    def __init__(
        self, batch_size: int, recipe: Recipe, capacity: int, attached: Attached | None = None
    ) -> None:
        s, m, c = recipe.image_size, recipe.mask_size, capacity
        self.capacity = capacity
        self.image = np.zeros((batch_size, s, s, 3), np.uint8)
        self.masks = np.zeros((batch_size, c, m, m), np.bool_)
        self.valid = np.zeros((batch_size, c), np.bool_)
        per_mask = fields.per_mask(recipe.relations, recipe.point_count)
        pairwise = fields.pairwise(recipe.relations)
        self.fields = {f: np.zeros((batch_size, c, *shape), dtype)
                       for f, (dtype, shape) in per_mask.items()}  # fmt: skip
        self.pairwise = {f: np.zeros((batch_size, c, c), dtype) for f, dtype in pairwise.items()}
        self.image_id = np.zeros(batch_size, np.int64)
        self.sizes = {f: np.zeros((batch_size, 2), np.int64) for f in fields.SIZES}
        self.counts = np.zeros(batch_size, np.int64)
        self.attached = {n: np.zeros((batch_size, *shape), dtype)
                         for n, (dtype, shape) in (attached or {}).items()}  # fmt: skip
        self.present = {f"{n}_present": np.zeros(batch_size, np.bool_) for n in self.attached}

    def fill(self, slot: int, store: Any, index: int, recipe: Recipe, epoch: int,
             **transforms: Any) -> None:  # fmt: skip
        """Sample ``index`` into slot ``slot``: image and masks decoded in place (copied in
        only if a transform (``transform``, ``mask_transform``) replaced the arrays);
        ``stages`` too goes on to ``training_sample``."""
        out = training_sample(store, index, recipe, epoch, image_out=self.image[slot],
                              masks_out=self.masks[slot], **transforms)  # fmt: skip
        k = len(out["masks"])
        if k > self.capacity:
            raise OverflowError(k)  # the batch grows its buffer and refills this slot
        _place(self.image[slot], out["image"])
        _place(self.masks[slot, :k], out["masks"])
        for field, values in self.fields.items():
            values[slot, :k] = out[field]
        for field, values in self.pairwise.items():
            values[slot, :k, :k] = out[field]
        self.counts[slot] = k
        self.image_id[slot] = out["image_id"]
        for field, values in self.sizes.items():
            values[slot] = out[field]
        if self.attached:
            sample = store[index]
            for name, rows in self.attached.items():
                np.copyto(rows[slot], sample.attached(name))
                self.present[f"{name}_present"][slot] = sample.attached_present(name)

    def batch(self, n: int) -> dict[str, np.ndarray]:
        """Views of the first ``n`` slots, padded to the batch's largest mask count with
        zeros (False) where a sample has fewer masks: ``collate``'s layout."""
        k = int(self.counts[:n].max(initial=0))
        valid = self.valid[:n, :k]
        valid[...] = np.arange(k)[None, :] < self.counts[:n, None]
        masks = self.masks[:n, :k]
        for slot in range(n):  # clear what an earlier batch left beyond this sample's masks
            c = self.counts[slot]
            masks[slot, c:] = False
            for field, values in self.fields.items():
                values[slot, c:k] = fields.PAD.get(field, 0)
            for values in self.pairwise.values():
                values[slot, c:k, :k] = 0
                values[slot, :c, c:k] = 0
        return {"image": self.image[:n], "masks": masks, "mask_valid": valid,
                **{f: v[:n, :k] for f, v in self.fields.items()},
                **{f: v[:n, :k, :k] for f, v in self.pairwise.items()},
                "image_id": self.image_id[:n],
                **{f: v[:n] for f, v in self.sizes.items()},
                **{k: v[:n] for k, v in (self.attached | self.present).items()}}  # fmt: skip


def _place(slot: np.ndarray, value: np.ndarray) -> None:
    """Copy ``value`` into ``slot`` unless it already is that memory (the usual case)."""
    if value.__array_interface__ != slot.__array_interface__:
        slot[...] = value


def batches_of(keys: Iterable[Any], batch_size: int, drop_last: bool) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for key in keys:
        batch.append(key)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch and not drop_last:
        yield batch


def batch_count(items: int, batch_size: int, drop_last: bool) -> int:
    return items // batch_size if drop_last else math.ceil(items / batch_size)


def threaded_batches(
    dataset: Any,
    keys: Iterable[Any],
    batch_size: int,
    *,
    threads: int,
    prefetch: int,
    drop_last: bool,
    snapshot: Any = None,
    stages: StageTimes | None = None,
    buffer: Callable[[int], Any] | None = None,
) -> Iterator[tuple[dict[str, np.ndarray], Any]]:
    """(batch, state) pairs of ``dataset`` (an SA1BDataset: store, index, recipe, epoch) for
    ``keys`` (dataset indices, or ``(index, epoch)`` pairs), made by ``threads`` threads.
    ``snapshot()`` is called as each batch's keys are drawn, and its value comes out with
    that batch: the sampler's state exactly after it, however far the threads run ahead.
    ``stages`` records each sample's stage times and each batch's padding (train/stats.py).
    ``buffer(batch_size)`` makes another kind of batch buffer (the device stage's)."""
    recipe: Recipe = dataset.recipe
    capacity = recipe.max_masks if recipe.mask_sampling != "all" else 1
    attached = getattr(dataset, "attached", None)
    if buffer is None:
        buffer = lambda n: BatchBuffer(n, recipe, capacity, attached)  # noqa: E731
    ring = [buffer(batch_size) for _ in range(2 * prefetch)]
    pool = ThreadPoolExecutor(max(1, threads), thread_name_prefix="sa1b-loader")
    in_flight: deque[tuple[int, list[Any], list[Future], Any]] = deque()
    order = batches_of(keys, batch_size, drop_last)

    def submit(number: int, batch: list[Any]) -> None:
        buffer = ring[number % len(ring)]
        futures = [pool.submit(_fill, buffer, slot, dataset, key, stages) for slot, key in
                   enumerate(batch)]  # fmt: skip
        in_flight.append((number, batch, futures, snapshot() if snapshot else None))

    try:
        number = 0
        for batch in order:
            submit(number, batch)
            number += 1
            if len(in_flight) < prefetch:
                continue
            yield _finish(ring, in_flight.popleft(), dataset, stages)
        while in_flight:
            yield _finish(ring, in_flight.popleft(), dataset, stages)
    finally:  # break, an exception, KeyboardInterrupt: no thread is left running
        for _, _, futures, _ in in_flight:
            for future in futures:
                future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


def _key(dataset: Any, key: Any) -> tuple[int, int]:
    return key if isinstance(key, tuple) else (int(key), dataset.epoch)


def _fill(buffer: BatchBuffer, slot: int, dataset: Any, key: Any, stages: Any = None) -> None:
    i, epoch = _key(dataset, key)
    buffer.fill(slot, dataset.store, int(dataset.index[i]), dataset.recipe, epoch,
                transform=getattr(dataset, "transform", None),
                mask_transform=getattr(dataset, "mask_transform", None), stages=stages)  # fmt: skip


def _finish(ring: list[BatchBuffer], job: tuple, dataset: Any, stages: Any) -> tuple[dict, Any]:
    """Wait for every sample of a batch, grow its buffer if a sample had more masks than it
    holds (then refill those slots), and return its views; a failed sample raises
    SampleError naming it."""
    number, batch, futures, state = job
    buffer = ring[number % len(ring)]
    overflow: dict[int, int] = {}
    failed: tuple[Any, BaseException] | None = None
    for slot, (key, future) in enumerate(zip(batch, futures, strict=True)):
        try:
            future.result()
        except OverflowError as grow:
            overflow[slot] = int(grow.args[0])
        except Exception as exc:
            failed = failed or (key, exc)
    if failed is not None:
        key, exc = failed
        i, epoch = _key(dataset, key)
        image_id = dataset.store[int(dataset.index[i])].image_id
        raise SampleError(f"sample {i} (image id {image_id}, epoch {epoch}) failed: "
                          f"{type(exc).__name__}: {exc}") from exc  # fmt: skip
    if overflow:
        buffer = _grown(ring, number, buffer, max(overflow.values()), dataset)
        for slot in overflow:
            _fill(buffer, slot, dataset, batch[slot], stages)
    if stages is None:
        return buffer.batch(len(batch)), state
    t0 = time.perf_counter_ns()
    views = buffer.batch(len(batch))
    stages.add(COLLATE, time.perf_counter_ns() - t0)
    return views, state


def _grown(ring: list[BatchBuffer], number: int, old: BatchBuffer, need: int, dataset: Any):
    """A buffer with room for ``need`` masks per sample holding what ``old`` holds."""
    new = BatchBuffer(len(old.image), dataset.recipe, max(need, 2 * old.capacity),
                      getattr(dataset, "attached", None))  # fmt: skip
    new.image[...] = old.image
    k = old.capacity
    new.masks[:, :k] = old.masks
    for field, values in old.fields.items():
        new.fields[field][:, :k] = values
    for field, values in old.pairwise.items():
        new.pairwise[field][:, :k, :k] = values
    for field, values in old.sizes.items():
        new.sizes[field][...] = values
    new.image_id[...] = old.image_id
    new.counts[...] = old.counts
    for mine, theirs in ((new.attached, old.attached), (new.present, old.present)):
        for name, values in theirs.items():
            mine[name][...] = values
    ring[number % len(ring)] = new
    return new

"""``SA1BLoader``: batches made by threads of the training process (train/threaded.py), each
sample decoded straight into its slot of a reused batch buffer, optionally finished on a GPU
(train/device.py). A torch-using module."""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from .device import DeviceStage
from .stats import LoaderStats, StageTimes, timed
from .threaded import batch_count, threaded_batches
from .torch import SA1BDataset

logger = logging.getLogger("sa1b_pack")


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

"""PyTorch adapter, the only module that imports torch (``pip install sa1b-pack[torch]``).

A map-style Dataset over a packed store for SAM-style training, and a collate function that
pads the per-image mask count. Workers open the store's memory maps lazily, each in its own
process (fork or spawn); what is pickled to them is the store path, the recipe and the index
of eligible images (spilled to a temp .npy file and memory-mapped when large).
"""

from __future__ import annotations

import logging
import os
import tempfile
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..store.reader import open_store
from .recipe import Recipe, eligible_images, training_sample

logger = logging.getLogger("sa1b_pack")
SPILL_ABOVE = 1 << 20  # index entries pickled inline up to this many, else via a .npy file


class SA1BDataset(Dataset):
    """SA-1B samples for SAM-style training: image, K sampled masks, boxes, points, quality.

    Images with no mask passing the filters are skipped when the dataset is built, so
    ``len(ds)`` counts only usable images. Mask draws depend on (seed, epoch, image): call
    ``set_epoch(e)`` before iterating epoch ``e`` (with ``persistent_workers=False``, the
    default, workers pick it up when the epoch's iterator is created).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        image_size: int = 1024,
        mask_size: int = 256,
        max_masks: int = 64,
        min_predicted_iou: float = 0.0,
        min_stability_score: float = 0.0,
        min_area: int = 0,
        mask_sampling: str = "random",
        seed: int = 0,
        float_image: bool = False,
    ) -> None:
        self.root = os.fspath(root)
        self.recipe = Recipe(
            image_size=image_size,
            mask_size=mask_size,
            max_masks=max_masks,
            min_predicted_iou=min_predicted_iou,
            min_stability_score=min_stability_score,
            min_area=min_area,
            mask_sampling=mask_sampling,
            seed=seed,
        )
        self.float_image = float_image
        self.epoch = 0
        self.store = open_store(self.root)
        self.index = eligible_images(self.store, self.recipe)
        if self.store.image_longest == image_size:
            quality = self.store.manifest.get("resized_quality")
            self.image_source = f"pre-resized {image_size} px JPEGs (quality {quality})"
        else:
            self.image_source = "full-size JPEGs, decoded and resized per sample"
        logger.info("SA1BDataset %s: %d images, using %s", self.root, len(self), self.image_source)

    def __repr__(self) -> str:
        return f"SA1BDataset({self.root!r}, images={len(self)}, images from {self.image_source})"

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} samples")
        sample = training_sample(self.store, int(self.index[i]), self.recipe, self.epoch)
        image = torch.from_numpy(sample["image"]).permute(2, 0, 1)
        if self.float_image:
            image = image.float().div_(255.0)
        return {
            "image": image,
            "masks": torch.from_numpy(sample["masks"]),
            "boxes": torch.from_numpy(sample["boxes"].astype(np.float32)),
            "points": torch.from_numpy(sample["points"].astype(np.float32)),
            "predicted_iou": torch.from_numpy(sample["predicted_iou"].astype(np.float32)),
            "stability_score": torch.from_numpy(sample["stability_score"].astype(np.float32)),
            "mask_ids": torch.from_numpy(sample["mask_ids"]),
            "image_id": sample["image_id"],
            "orig_size": torch.tensor(sample["orig_size"]),
            "input_size": torch.tensor(sample["input_size"]),
        }

    def __getstate__(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k not in ("store", "index")}
        if len(self.index) > SPILL_ABOVE:
            fd, path = tempfile.mkstemp(prefix="sa1b_index_", suffix=".npy")
            with os.fdopen(fd, "wb") as f:
                np.save(f, np.asarray(self.index))
            state["index_file"] = path
        else:
            state["index"] = np.asarray(self.index)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        path = state.pop("index_file", None)
        self.__dict__.update(state)
        self.store = open_store(self.root)
        if path is not None:
            self.index = np.load(path, mmap_mode="r")


PER_MASK = ("boxes", "points", "predicted_iou", "stability_score", "mask_ids")


def collate(batch: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack a batch, padding masks and per-mask fields to the batch's largest K.

    ``mask_valid`` (B, K) marks real masks; padded masks are all False, padded numbers 0.
    """
    size = batch[0]["masks"].shape[1:]
    k = max(len(s["masks"]) for s in batch)
    masks = torch.zeros((len(batch), k, *size), dtype=torch.bool)
    valid = torch.zeros((len(batch), k), dtype=torch.bool)
    out: dict[str, Any] = {
        f: torch.zeros((len(batch), k, *batch[0][f].shape[1:]), dtype=batch[0][f].dtype)
        for f in PER_MASK
    }
    for b, s in enumerate(batch):
        n = len(s["masks"])
        masks[b, :n] = s["masks"]
        valid[b, :n] = True
        for f in PER_MASK:
            out[f][b, :n] = s[f]
    out["image"] = torch.stack([s["image"] for s in batch])
    out["masks"] = masks
    out["mask_valid"] = valid
    out["image_id"] = torch.tensor([s["image_id"] for s in batch], dtype=torch.int64)
    out["orig_size"] = torch.stack([s["orig_size"] for s in batch])
    out["input_size"] = torch.stack([s["input_size"] for s in batch])
    return out

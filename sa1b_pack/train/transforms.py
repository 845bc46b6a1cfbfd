"""Augmentations of a decoded training sample: the contract, and two examples.

``transform(sample, rng) -> sample`` gets the numpy dict of ``training_sample`` after decode
and returns it (the same dict changed in place, or a new one), with:

- the same keys; ``image`` still (S, S, 3) uint8 and ``masks`` still (K', m, m) bool: the
  output shape is fixed, so batches stack and the threaded loader's batch slots stay valid (a
  transform that needs another size belongs in the recipe: ``image_size``, ``mask_size``);
- every per-mask field (``fields.per_mask``: boxes, points, predicted_iou, ..., and with
  relations centroids, orig_centroids, scale_level; iou and containment on both axes) kept
  in step with ``masks``: K' may be smaller than K, never by dropping masks from some fields
  only (``select_masks`` does it for all of them);
- image, masks, boxes (XYXY), points ((K, P, 2) XY, NaN if none), centroids and the unpadded
  sizes ``input_size`` (image) and ``mask_input_size`` (masks) moved together: the valid
  region stays at the top left, padding bottom/right is zero, as SAM's postprocessing
  expects; a point moved out of the valid region becomes NaN with ``point_labels`` -1;
- source facts unchanged: ``orig_size``, ``orig_centroids``, iou, containment, scale_level,
  ids and scores describe the annotation at full resolution, not the augmented view.

``mask_transform(masks, mask_input_size, rng) -> masks`` runs after ``transform`` on the
(K, m, m) bool masks alone (e.g. noise on the targets) and returns the same shape and dtype.

Both draw their randomness from ``rng``, a Generator seeded by (recipe seed, epoch, image,
1): never from global state, so a sample is the same in DataLoader workers or loader
threads, and a resumed run sees the same augmentations. The arrays are the sample's own
(a batch slot in the threaded loader): changing them in place is fine and cheapest. Under
``spawn`` workers transforms are pickled: use module-level functions or classes, not lambdas.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..codec.jpeg import resize_pixels
from ..errors import ConfigError
from .fields import PAIRWISE, PER_MASK, RELATIONS

Sample = dict[str, Any]
Transform = Callable[[Sample, np.random.Generator], Sample]
MaskTransform = Callable[[np.ndarray, tuple[int, int], np.random.Generator], np.ndarray]


def apply_transforms(
    sample: Sample,
    transform: Transform | None,
    mask_transform: MaskTransform | None,
    rng: np.random.Generator,
) -> Sample:
    """``transform`` then ``mask_transform``, each result checked against the contract."""
    keys, image_shape = set(sample), sample["image"].shape
    mask_shape = sample["masks"].shape[1:]
    if transform is not None:
        sample = transform(sample, rng)
        _check(sample, keys, image_shape, mask_shape, "transform")
    if mask_transform is not None:
        masks = sample["masks"]
        out = mask_transform(masks, tuple(sample["mask_input_size"]), rng)
        if not isinstance(out, np.ndarray) or out.shape != masks.shape or out.dtype != bool:
            got = getattr(out, "shape", type(out).__name__), getattr(out, "dtype", "")
            raise ConfigError(f"mask_transform must return {masks.shape} bool, got {got}")
        sample["masks"] = out
    return sample


def _check(sample: Any, keys: set, image_shape: tuple, mask_shape: tuple, name: str) -> None:
    if not isinstance(sample, dict) or set(sample) != keys:
        got = sorted(sample) if isinstance(sample, dict) else type(sample).__name__
        raise ConfigError(f"{name} must return the sample's keys {sorted(keys)}, got {got}")
    image, masks = sample["image"], sample["masks"]
    if image.shape != image_shape or image.dtype != np.uint8:
        raise ConfigError(f"{name} must keep image {image_shape} uint8, got {image.shape} "
                         f"{image.dtype}")  # fmt: skip
    if masks.ndim != 3 or masks.shape[1:] != mask_shape or masks.dtype != bool:
        raise ConfigError(f"{name} must keep masks (K, {mask_shape[0]}, {mask_shape[1]}) bool, "
                         f"got {masks.shape} {masks.dtype}")  # fmt: skip
    k = len(masks)
    for f in (f for f in [*PER_MASK, *RELATIONS, *PAIRWISE] if f in sample):
        shape = np.shape(sample[f])
        if shape[:1] != (k,) or (f in PAIRWISE and shape != (k, k)):
            raise ConfigError(f"{name} left {f} with shape {shape} for {k} masks")


def select_masks(sample: Sample, keep: np.ndarray | Sequence[int]) -> Sample:
    """Keep only the masks ``keep`` (indices or a boolean array), in every per-mask field."""
    keep = np.asarray(keep)
    index = np.flatnonzero(keep) if keep.dtype == bool else keep.astype(np.int64)
    for f in ["masks", *PER_MASK, *RELATIONS]:
        if f in sample:
            sample[f] = sample[f][index]
    for f in PAIRWISE:
        if f in sample:
            sample[f] = sample[f][np.ix_(index, index)]
    return sample


class Compose:
    """Transforms applied in order, sharing the sample's ``rng``."""

    def __init__(self, *transforms: Transform) -> None:
        self.transforms = transforms

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        for t in self.transforms:
            sample = t(sample, rng)
        return sample


class HorizontalFlip:
    """Mirror the sample left-right with probability ``p``, inside the valid region.

    Not the padded canvas: that would move the image to the right and the padding to the
    left, where SAM's postprocessing (crop to ``input_size`` at the top left) would cut the
    image and keep padding. Pixel column x of a (h, w) region goes to w - 1 - x, continuous
    coordinates (boxes, points, centroids; pixel x covers [x, x + 1)) to w - x.
    """

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if rng.random() >= self.p:
            return sample
        h, w = sample["input_size"]
        mh, mw = sample["mask_input_size"]
        image, masks = sample["image"], sample["masks"]
        image[:h, :w] = image[:h, :w][:, ::-1]  # numpy copies overlapping operands first
        masks[:, :mh, :mw] = masks[:, :mh, :mw][:, :, ::-1]
        boxes = sample["boxes"].copy()
        boxes[:, 0], boxes[:, 2] = w - sample["boxes"][:, 2], w - sample["boxes"][:, 0]
        sample["boxes"] = boxes
        for f in ("points", "centroids"):
            if f in sample:
                xy = sample[f].copy()
                xy[..., 0] = w - xy[..., 0]
                sample[f] = xy
        return sample


def _mask_boxes(masks: np.ndarray) -> np.ndarray:
    """(K, 4) XYXY box of each non-empty mask in its own pixels (pixel c covers [c, c + 1))."""
    cols, rows = masks.any(axis=1), masks.any(axis=2)
    x0, y0 = cols.argmax(axis=1), rows.argmax(axis=1)
    x1 = cols.shape[1] - cols[:, ::-1].argmax(axis=1)
    y1 = rows.shape[1] - rows[:, ::-1].argmax(axis=1)
    return np.stack([x0, y0, x1, y1], axis=1).astype(np.float64)


class ResizeJitter:
    """Scale the image content by a factor drawn uniformly from [min_scale, max_scale].

    Below 1 the content shrinks and the padding grows; above 1 it grows and is cut to the
    canvas at the bottom/right (the top-left anchor of SAM's frame), points falling outside
    become NaN with label -1, and the box of a cut mask becomes the box of what is left of
    its mask, to a mask pixel (``S / m`` image pixels; a noisy box is then exact again).
    Masks left empty (cut off, or too thin once shrunk) that were not empty before are
    dropped with ``select_masks``. The image resizes by OpenCV (area to shrink, bilinear to
    grow), masks by nearest neighbour on pixel centres, like the recipe's; boxes, points and
    centroids scale by each axis' exact image factor (new w / w, new h / h).
    """

    def __init__(self, min_scale: float = 0.5, max_scale: float = 1.0) -> None:
        if not 0 < min_scale <= max_scale:
            raise ConfigError(f"need 0 < min_scale <= max_scale, got {min_scale}, {max_scale}")
        self.min_scale, self.max_scale = min_scale, max_scale

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        scale = rng.uniform(self.min_scale, self.max_scale)
        image, masks = sample["image"], sample["masks"]
        size, m = image.shape[0], masks.shape[-1]
        h, w = sample["input_size"]
        mh, mw = sample["mask_input_size"]
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        vh, vw = min(nh, size), min(nw, size)
        content = image[:h, :w].copy()
        if (vh, vw) == (nh, nw):
            resize_pixels(content, nh, nw, out=image[:nh, :nw])
        else:
            image[:vh, :vw] = resize_pixels(content, nh, nw)[:vh, :vw]
        image[vh:] = 0
        image[:vh, vw:] = 0
        sample["input_size"] = (vh, vw)

        nmh, nmw = max(1, round(mh * scale)), max(1, round(mw * scale))
        vmh, vmw = min(nmh, m), min(nmw, m)
        rows = ((np.arange(vmh) + 0.5) * mh / nmh).astype(np.int64)
        cols = ((np.arange(vmw) + 0.5) * mw / nmw).astype(np.int64)
        had = masks.any(axis=(1, 2))
        resized = masks[:, rows[:, None], cols[None, :]]
        masks[...] = False
        masks[:, :vmh, :vmw] = resized
        sample["mask_input_size"] = (vmh, vmw)

        factor = np.array([nw / w, nh / h])
        boxes = sample["boxes"] * np.tile(factor, 2)
        cut = (boxes[:, 2] > vw) | (boxes[:, 3] > vh)
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, vw)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, vh)
        cut &= masks.any(axis=(1, 2))
        if cut.any():  # what is left of a cut mask has a smaller box: its mask's, rescaled
            pixel = np.array([vw / vmw, vh / vmh] * 2)
            boxes[cut] = (_mask_boxes(masks[cut]) * pixel).clip(0, [vw, vh, vw, vh])
        sample["boxes"] = boxes
        points = sample["points"] * factor
        out = (points[..., 0] >= vw) | (points[..., 1] >= vh)
        points[out] = np.nan
        sample["points"] = points
        if "point_labels" in sample:
            sample["point_labels"] = np.where(out, -1, sample["point_labels"])
        if "centroids" in sample:
            sample["centroids"] = sample["centroids"] * factor
        lost = had & ~masks.any(axis=(1, 2))
        return select_masks(sample, ~lost) if lost.any() else sample

"""The SAM training recipe over a store, in numpy: filters, mask sampling, image/box/point resize.

Kept free of torch so it can be tested and used alone; ``sa1b_pack.torch`` wraps it. Quality
and area filters run on the per-mask columns (memory-mapped Arrow) before anything is decoded,
and only the sampled masks are decoded, straight to the size training needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..codec.geometry import resize_longest_shape
from ..codec.jpeg import decode_image, decode_resized
from ..codec.rle import decode_padded
from ..errors import ConfigError
from ..read.parts import Part
from ..read.ranged import RangePart
from ..read.reader import Store
from .prompts import NEGATIVE_FROM, noisy_boxes, prompt_points
from .relations import mask_relations
from .stats import IMAGE, MASKS, PROMPTS, READ, TRANSFORM, StageTimes, no_lap
from .transforms import MaskTransform, Transform, apply_transforms

SAMPLING = ("random", "largest", "all")
# The Recipe fields ``passing`` reads: all the eligible-image index depends on (train/index.py)
FILTERS = ("min_predicted_iou", "min_stability_score", "min_area")


@dataclass(frozen=True)
class Recipe:
    """What one training sample is: image and mask sizes, filters, and how masks are chosen.

    ``mask_sampling``: "random" draws up to ``max_masks`` of the passing masks without
    replacement, "largest" keeps the ``max_masks`` largest by area, "all" keeps every passing
    mask (``max_masks`` ignored). Draws depend only on (seed, epoch, index).
    ``relations`` adds the sampled masks' IoU, containment, centroids and scale levels
    (train/relations.py): off by default, it costs a merge of run lists per pair of masks.

    Prompts (train/prompts.py), drawn from the sampled masks' runs: ``points_per_mask``
    foreground points uniform over each mask's pixels (0: the one point stored in SA-1B),
    then ``negative_points`` outside the mask, inside its box or anywhere in the image
    (``negative_from``); ``box_noise``: SAM's box noise, std = fraction x the box's side,
    clipped at ``box_noise_max`` pixels of the resized frame (SAM: 0.1 and 20 at 1024).
    """

    image_size: int = 1024
    mask_size: int = 256
    max_masks: int = 64
    min_predicted_iou: float = 0.0
    min_stability_score: float = 0.0
    min_area: int = 0
    mask_sampling: str = "random"
    seed: int = 0
    relations: bool = False
    points_per_mask: int = 0
    negative_points: int = 0
    negative_from: str = "box"
    box_noise: float = 0.0
    box_noise_max: float = 20.0

    def __post_init__(self) -> None:
        if self.mask_sampling not in SAMPLING:
            raise ConfigError(
                f"mask_sampling must be one of {SAMPLING}, got {self.mask_sampling!r}"
            )
        if self.image_size < 1 or self.mask_size < 1 or self.max_masks < 1:
            raise ConfigError("image_size, mask_size and max_masks must be positive")
        if self.negative_from not in NEGATIVE_FROM:
            raise ConfigError(f"negative_from must be one of {NEGATIVE_FROM}, "
                             f"got {self.negative_from!r}")  # fmt: skip
        if min(self.points_per_mask, self.negative_points, self.box_noise, self.box_noise_max) < 0:
            raise ConfigError("points_per_mask, negative_points and box_noise(_max) must be >= 0")

    @property
    def point_count(self) -> int:
        """P, the points per mask of a sample: foreground (or the stored one), then negative."""
        return max(self.points_per_mask, 1) + self.negative_points

    def passing(
        self, predicted_iou: np.ndarray, stability_score: np.ndarray, area: np.ndarray
    ) -> np.ndarray:
        """Which masks pass the quality and area filters (boolean, one per mask)."""
        return (
            (predicted_iou >= self.min_predicted_iou)
            & (stability_score >= self.min_stability_score)
            & (area >= self.min_area)
        )


def eligible_images(store: Store, recipe: Recipe) -> np.ndarray:
    """Global indices of the images with at least one mask passing the filters (int64).

    Images left with no mask are skipped here, at index time, so ``len`` is honest.
    """
    chosen = []
    for p in range(len(store.shards)):
        part = filter_part(store, p)
        filters = (part.mask_column(c) for c in ("predicted_iou", "stability_score", "area"))
        ok = recipe.passing(*filters)
        running = np.concatenate([[0], np.cumsum(ok, dtype=np.int64)])
        start = part.images["mask_start"].astype(np.int64)
        passing = running[start + part.images["mask_count"]] - running[start]
        chosen.append(store.part_start(p) + np.flatnonzero(passing > 0))
    return np.concatenate(chosen) if chosen else np.empty(0, np.int64)


def filter_part(store: Store, p: int) -> Part:
    """Part ``p``, to read its filter columns. On object storage through a part cache, a part
    not cached yet is read by byte range (three columns of its annotations Parquet) and not
    downloaded whole: the index reads every part, so downloading them (JPEGs and all) would
    make each node's first start fetch the whole store into its cache."""
    cache = getattr(store.storage, "cache", None)
    name = store.shards[p]
    entry = store.manifest["shards"][name]
    if cache is not None and not cache.has(store.storage, name, entry):
        return RangePart(store.storage, name, entry)  # type: ignore[arg-type]
    return store.part(p)


def choose_masks(
    passing: np.ndarray, area: np.ndarray, recipe: Recipe, rng: np.random.Generator
) -> np.ndarray:
    """Indices (into the image's masks) of the masks to train on, given the passing ones."""
    candidates = np.flatnonzero(passing)
    if recipe.mask_sampling == "all" or len(candidates) <= recipe.max_masks:
        if recipe.mask_sampling == "random":
            return rng.permutation(candidates)
        return candidates
    if recipe.mask_sampling == "random":
        return rng.choice(candidates, size=recipe.max_masks, replace=False)
    order = np.argsort(-area[candidates], kind="stable")  # largest first, ties in source order
    return candidates[order[: recipe.max_masks]]


def _first_points(point_coords: np.ndarray | list[np.ndarray], chosen: np.ndarray) -> np.ndarray:
    """(K, 2) first prompt point of each chosen mask (SA-1B has one each); NaN if it has none."""
    if isinstance(point_coords, np.ndarray) and point_coords.shape[1] > 0:
        return point_coords[chosen, 0]
    points = np.full((len(chosen), 2), np.nan)
    for k, j in enumerate(chosen):
        if len(point_coords[j]):
            points[k] = point_coords[j][0]
    return points


def training_sample(
    store: Store,
    index: int,
    recipe: Recipe,
    epoch: int = 0,
    key: int | None = None,
    *,
    image_out: np.ndarray | None = None,
    masks_out: np.ndarray | None = None,
    transform: Transform | None = None,
    mask_transform: MaskTransform | None = None,
    stages: StageTimes | None = None,
    decode: bool = True,
) -> dict[str, Any]:
    """One sample as numpy arrays: image (S, S, 3) uint8, masks (K, m, m) bool, boxes, points.

    ``key`` (default ``index``) seeds the mask draw with (seed, epoch, key). Boxes are XYXY and
    points (K, P, 2) XY with ``point_labels`` (K, P) (train/prompts.py), both in the resized
    (unpadded) image frame; masks are aligned with the padded image (SAM's low-res masks: mask
    pixel (y, x) covers image pixels scaled by S / m).
    ``input_size`` and ``mask_input_size`` are the unpadded (h, w) of image and masks.
    ``image_out`` (S, S, 3) and ``masks_out`` (>= K, m, m) are written in place when given (a
    batch slot of the threaded loader); the result then holds views of them, unless a
    transform replaced them. ``transform`` / ``mask_transform``: see train/transforms.py.
    ``stages`` records each stage's time (train/stats.py).
    ``decode=False`` (the device stage, train/device.py): no image or masks, but ``jpeg`` (the
    bytes to decode, ``jpeg_resized`` if already SAM's shape) and ``runs`` of the masks.
    """
    lap = stages.start() if stages is not None else no_lap
    s = store[index]
    rng = np.random.default_rng((recipe.seed, epoch, index if key is None else key))
    passing = recipe.passing(s.predicted_iou, s.stability_score, s.area)
    chosen = choose_masks(passing, s.area, recipe, rng)
    h, w = resize_longest_shape(s.height, s.width, recipe.image_size)
    sx, sy = w / s.width, h / s.height
    bbox = s.bbox[chosen]
    stored = _first_points(s.point_coords, chosen)
    lap(READ)
    size = recipe.image_size
    image = np.empty((size, size, 3), np.uint8) if image_out is None and decode else image_out
    resized = store.image_longest == recipe.image_size  # the store holds this exact resize
    if not decode:
        pass
    elif resized:
        decode_resized(s.resized_jpeg, recipe.image_size, image)
    else:
        decode_image(s.jpeg, s.height, s.width, recipe.image_size, image)
    lap(IMAGE)
    m = recipe.mask_size
    if not decode:
        masks = None
    elif masks_out is None or len(masks_out) < len(chosen):
        masks = np.empty((len(chosen), m, m), bool)
    else:
        masks = masks_out[: len(chosen)]
    runs = s.mask_runs(chosen)  # parsed once, for the masks, the prompts and the relations
    if decode:
        decode_padded(*runs, s.height, s.width, longest=m, pad=True, out=masks)
    lap(MASKS)
    boxes = np.stack(
        [
            bbox[:, 0] * sx,
            bbox[:, 1] * sy,
            (bbox[:, 0] + bbox[:, 2]) * sx,
            (bbox[:, 1] + bbox[:, 3]) * sy,
        ],
        axis=1,
    )
    points, labels = prompt_points(*runs, s.height, s.width, bbox, stored, recipe, rng, (sx, sy))
    if recipe.box_noise > 0:
        boxes = noisy_boxes(boxes, recipe.box_noise, recipe.box_noise_max, rng, (h, w))
    sample = {
        "image": image,
        "masks": masks,
        "boxes": boxes,
        "points": points,
        "point_labels": labels,
        "predicted_iou": s.predicted_iou[chosen].copy(),
        "stability_score": s.stability_score[chosen].copy(),
        "mask_ids": s.mask_ids[chosen].copy(),
        "image_id": s.image_id,
        "orig_size": (s.height, s.width),
        "input_size": (h, w),
        "mask_input_size": resize_longest_shape(s.height, s.width, m),
    }
    if recipe.relations:
        sample.update(mask_relations(*runs, s.height, s.width, (sx, sy)))
    lap(PROMPTS)
    if not decode:
        del sample["image"], sample["masks"]
        jpeg = s.resized_jpeg if resized else s.jpeg
        sample.update(jpeg=jpeg, jpeg_resized=resized, runs=runs)
        return sample
    if transform is None and mask_transform is None:
        return sample
    rng = np.random.default_rng((recipe.seed, epoch, index if key is None else key, 1))
    sample = apply_transforms(sample, transform, mask_transform, rng)
    lap(TRANSFORM)
    return sample

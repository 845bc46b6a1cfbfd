"""Checks across one image's parsed columns, each vectorised over all its masks at once.

Two rejections (a negative ``area``, two annotations sharing an ``id``) and three warnings:
an ``image.file_name`` that is not the JPEG member's name, and an ``area`` or ``bbox`` that
disagrees with what the mask's runs give. A warned sample is packed exactly as the source
says: a derived value is a check, never a substitute. Both parse paths (whole columns, value
by value) run these on their finished columns, so they agree by construction.

The released SA-1B ``bbox`` is SAM's ``batched_mask_to_box`` in XYWH, whose w and h are one
less than ``pycocotools.mask.toBbox`` (it subtracts inclusive ends); ``toBbox``'s own box is
seen too (the synthetic shards hold both, see testing/synth_image.py). Either passes silently.
"""

from __future__ import annotations

import numpy as np

from ..codec import rle as mask_codec

SAM_BOX = np.array([0.0, 0.0, 1.0, 1.0])  # toBbox - SAM's box


def _annotation(masks: dict[str, np.ndarray], j: int) -> str:
    return f"annotations[{j}] (id {int(masks['id'][j])})"


def _and_more(bad: np.ndarray) -> str:
    return f" (and {len(bad) - 1} more annotations)" if len(bad) > 1 else ""


def rejected(masks: dict[str, np.ndarray]) -> str | None:
    """Why the image must be rejected (naming the first annotation concerned), or None."""
    negative = np.flatnonzero(masks["area"] < 0)
    if len(negative):
        j = int(negative[0])
        return f"{_annotation(masks, j)}: area {int(masks['area'][j])} is negative"
    ids = masks["id"]
    order = np.argsort(ids, kind="stable")
    repeats = np.flatnonzero(ids[order[1:]] == ids[order[:-1]])
    if len(repeats):
        later = order[1:][repeats]  # the second of each equal pair, in source order
        k = int(np.argmin(later))
        j, first = int(later[k]), int(order[repeats[k]])
        return f"{_annotation(masks, j)}: id repeats annotations[{first}]'s"
    return None


def warnings(
    image: dict,
    masks: dict[str, np.ndarray],
    runs: np.ndarray,
    run_offsets: np.ndarray,
    run_counts: np.ndarray,
) -> list[str]:
    """What looks wrong but is packed as written: one line per kind, naming the first case."""
    found = []
    expected = f"sa_{image['image_id']}.jpg"
    if image["file_name"] != expected:
        found.append(
            f"image.file_name {image['file_name']!r:.60} is not the JPEG member's name {expected}"
        )
    if not len(run_offsets):
        return found
    area = mask_codec.area(runs, run_offsets, run_counts)
    bad = np.flatnonzero(area != masks["area"])
    if len(bad):
        j = int(bad[0])
        found.append(
            f"{_annotation(masks, j)}: area {int(masks['area'][j])} disagrees with its mask's "
            f"{int(area[j])} pixels{_and_more(bad)}"
        )
    box = mask_codec.bbox(runs, run_offsets, run_counts, image["height"])
    given = masks["bbox"]
    fits = (given == box).all(axis=1) | (given == box - SAM_BOX).all(axis=1)
    bad = np.flatnonzero(~fits)
    if len(bad):
        j = int(bad[0])
        found.append(
            f"{_annotation(masks, j)}: bbox {given[j].tolist()} disagrees with its mask's box "
            f"{box[j].tolist()} (toBbox; SAM's is w, h one less){_and_more(bad)}"
        )
    return found

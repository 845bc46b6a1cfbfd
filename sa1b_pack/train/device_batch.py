"""The CPU half of the device stage (train/device.py): what loader threads leave per sample,
and one batch of them packed into a single flat buffer for one host-to-device copy.

Threads do what is cheap or must stay on the host: the store read, the mask draw, boxes,
points and scores, the sampled masks' runs (parsed from their COCO strings), a copy of the
JPEG bytes, and, for a JPEG the device decoder cannot take (codec/jpeg_markers.py), the CPU
recipe's own decode (so such images equal the CPU loader's exactly). With ``host_decode``
(device="cpu") threads also decode every other image full size: the resize then runs in torch
like on a GPU. Numpy only; torch enters where the packed buffer is allocated (device.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import simplejpeg

from ..codec.jpeg import decode_image, decode_resized
from ..codec.jpeg_markers import cpu_only_reason
from . import fields
from .recipe import Recipe, training_sample

ALIGN = 16  # bytes: every section of the packed buffer can be viewed as any dtype


class StagedBuffer:
    """One batch of staged samples; the threaded loader's buffer interface (``fill``,
    ``batch``) without its fixed-size arrays: samples are kept as the threads leave them."""

    capacity = 0  # never grown: nothing here has a fixed mask count

    def __init__(self, batch_size: int, host_decode: bool, attached: dict | None) -> None:
        self.samples: list[dict[str, Any] | None] = [None] * batch_size
        self.host_decode = host_decode
        self.attached = attached or {}

    def fill(self, slot: int, store: Any, index: int, recipe: Recipe, epoch: int,
             **_transforms: Any) -> None:  # fmt: skip
        self.samples[slot] = stage_sample(store, index, recipe, epoch, self.host_decode,
                                          self.attached)  # fmt: skip

    def batch(self, n: int) -> list[dict[str, Any]]:
        return list(self.samples[:n])


def stage_sample(store: Any, index: int, recipe: Recipe, epoch: int, host_decode: bool,
                 attached: dict) -> dict[str, Any]:  # fmt: skip
    """One sample's fields, runs and image source: ``pixels`` (full-size RGB decoded here),
    ``image`` (the CPU recipe's padded result, with ``fallback`` saying why) or ``jpeg``."""
    sample = training_sample(store, index, recipe, epoch, decode=False)
    jpeg, resized = sample.pop("jpeg"), sample.pop("jpeg_resized")  # resized: SAM's shape
    reason = cpu_only_reason(jpeg)
    if reason is not None:
        size = recipe.image_size
        sample["image"] = image = np.empty((size, size, 3), np.uint8)
        if resized:
            decode_resized(jpeg, size, image)
        else:
            decode_image(jpeg, *sample["orig_size"], size, image)
        sample["fallback"] = reason
    elif host_decode:
        sample["pixels"] = simplejpeg.decode_jpeg(jpeg, colorspace="RGB")
    else:
        sample["jpeg"] = np.frombuffer(jpeg, np.uint8).copy()  # the store's view may close
    if attached:
        s = store[index]
        for name in attached:
            sample[name] = s.attached(name).copy()
            sample[f"{name}_present"] = np.bool_(s.attached_present(name))
    return sample


@dataclass
class HostBatch:
    """A packed batch: ``sections`` name -> (offset, dtype, shape) in one flat byte buffer,
    and what the device decodes or places besides (indexed by batch slot)."""

    size: int  # bytes
    sections: dict[str, tuple[int, np.dtype, tuple[int, ...]]]
    arrays: dict[str, np.ndarray]
    jpegs: dict[int, np.ndarray] = field(default_factory=dict)
    pixels: dict[int, np.ndarray] = field(default_factory=dict)
    fallback: list[int] = field(default_factory=list)  # slots of the "fallback_images" rows
    reasons: list[str] = field(default_factory=list)
    chunks: list[tuple[int, int, int, int, int, int]] = field(default_factory=list)
    input_sizes: list[tuple[int, int]] = field(default_factory=list)
    orig_sizes: list[tuple[int, int]] = field(default_factory=list)

    def write(self, buffer: np.ndarray) -> None:
        """Copy every section into ``buffer`` (uint8, ``size`` bytes: pinned memory)."""
        for name, (offset, dtype, shape) in self.sections.items():
            n = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            buffer[offset : offset + n].view(dtype).reshape(shape)[...] = self.arrays[name]


def pack(samples: list[dict[str, Any]], recipe: Recipe, attached: dict | None,
         mask_chunk: int) -> HostBatch:  # fmt: skip
    """Pad the per-mask fields to the batch's largest K (``collate``'s layout), lay every
    mask's runs back to back with offsets, frames and output slots, and plan the mask
    expansion in chunks of whole images of at most ``mask_chunk`` masks (device memory)."""
    b = len(samples)
    counts = np.array([len(s["mask_ids"]) for s in samples], np.int64)
    k = int(counts.max(initial=0))
    arrays: dict[str, np.ndarray] = {"mask_valid": np.arange(k)[None, :] < counts[:, None]}
    for name, (dtype, shape) in fields.per_mask(recipe.relations).items():
        arrays[name] = values = np.full((b, k, *shape), fields.PAD.get(name, 0), dtype)
        for i, s in enumerate(samples):
            values[i, : counts[i]] = s[name]
    for name, dtype in fields.pairwise(recipe.relations).items():
        arrays[name] = values = np.zeros((b, k, k), dtype)
        for i, s in enumerate(samples):
            values[i, : counts[i], : counts[i]] = s[name]
    arrays["image_id"] = np.array([s["image_id"] for s in samples], np.int64)
    for name in fields.SIZES:
        arrays[name] = np.array([s[name] for s in samples], np.int64).reshape(b, 2)
    for name in attached or {}:
        arrays[name] = np.stack([s[name] for s in samples])
        arrays[f"{name}_present"] = np.array([s[f"{name}_present"] for s in samples])
    runs, run_counts = [], []
    for s in samples:
        data, offsets, lengths = s["runs"]
        runs += [data[o : o + n] for o, n in zip(offsets.tolist(), lengths.tolist(), strict=True)]
        run_counts.append(lengths)
    lengths = np.concatenate(run_counts) if run_counts else np.zeros(0, np.int64)
    arrays["runs"] = np.concatenate(runs).astype(np.int32) if runs else np.zeros(0, np.int32)
    arrays["run_offsets"] = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    heights = np.repeat(arrays["orig_size"][:, 0], counts)
    widths = np.repeat(arrays["orig_size"][:, 1], counts)
    mask_hw = np.repeat(arrays["mask_input_size"], counts, axis=0)
    arrays["frames"] = np.stack([heights, widths, mask_hw[:, 0], mask_hw[:, 1]], 1)
    arrays["slots"] = np.repeat(np.arange(b) * k, counts) + _ranks(counts)
    batch = HostBatch(0, {}, arrays)
    batch.input_sizes = [tuple(s["input_size"]) for s in samples]
    batch.orig_sizes = [tuple(s["orig_size"]) for s in samples]
    for i, s in enumerate(samples):
        if "image" in s:
            batch.fallback.append(i)
            batch.reasons.append(s["fallback"])
        elif "pixels" in s:
            batch.pixels[i] = s["pixels"]
        else:
            batch.jpegs[i] = s["jpeg"]
    if batch.fallback:
        arrays["fallback_images"] = np.stack([samples[i]["image"] for i in batch.fallback])
    batch.chunks = _mask_chunks(counts, k, arrays["run_offsets"], mask_chunk)
    offset = 0
    for name, values in arrays.items():
        values = np.ascontiguousarray(values)
        arrays[name] = values
        batch.sections[name] = (offset, values.dtype, values.shape)
        offset += -(-values.nbytes // ALIGN) * ALIGN
    batch.size = offset
    return batch


def _ranks(counts: np.ndarray) -> np.ndarray:
    """0..c-1 for each count c, back to back: each mask's place among its image's."""
    total = int(counts.sum())
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    return np.arange(total, dtype=np.int64) - starts


def _mask_chunks(counts: np.ndarray, k: int, run_offsets: np.ndarray, limit: int) -> list:
    """(first image, end image, first mask, end mask, first run, end run) per chunk of whole
    images whose padded slots (images * k) stay within ``limit`` masks (at least one image)."""
    per = max(1, limit // max(k, 1))
    mask_starts = np.concatenate([[0], np.cumsum(counts)])
    out = []
    for b0 in range(0, len(counts), per):
        b1 = min(b0 + per, len(counts))
        m0, m1 = int(mask_starts[b0]), int(mask_starts[b1])
        out.append((b0, b1, m0, m1, int(run_offsets[m0]), int(run_offsets[m1])))
    return out

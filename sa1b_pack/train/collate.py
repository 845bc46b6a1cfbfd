"""``collate``: stack a batch of samples, padding the per-mask fields to the batch's largest
mask count; and ``release_freed_memory`` for persistent DataLoader workers. Imports torch."""

from __future__ import annotations

import ctypes
from typing import Any

import torch

from . import fields

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
    pages: fewer samples/s where that is slow (docs/reading-and-training.md, "Memory over
    long runs")."""
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

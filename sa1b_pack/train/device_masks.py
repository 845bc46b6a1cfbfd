"""COCO runs -> SAM's low-res masks with torch ops only, so one code path runs on CPU and CUDA.

A torch-using module (like train/torch.py): the device stage (train/device.py) expands the
sampled masks on the GPU from their runs, and CI checks this same code on the CPU, bit for bit
against the numba kernels (codec/rle.py ``decode_padded``).

The result equals ``decode_padded(..., longest=size, pad=True)``: each mask's source (H, W) is
resized to SAM's ResizeLongestSide shape (h, w) by nearest neighbour, output pixel (y, x) being
source pixel (floor((y + 0.5) * H / h), floor((x + 0.5) * W / w)), and zero padded bottom/right
to (size, size). How, without a loop over masks: a run's start is a column-major source
offset, and from it on every pixel flips. Mapped to the first output column and row that
sample at or after it, each such boundary becomes one +1 in an output grid laid out column by
column; a cumulative sum along each mask's grid then counts the boundaries at or before every
output pixel, and its parity is the mask. Output columns that sample the same source column
(upscaling) copy the first of them. Counts are uint8: they wrap at 256, an even number, so the
parity stays exact.
"""

from __future__ import annotations

import numpy as np
import torch

from ..codec.geometry import resize_longest_shape


def mask_frames(heights: np.ndarray, widths: np.ndarray, size: int) -> np.ndarray:
    """(K, 4) int64 rows (H, W, h, w): each mask's source shape and its resized shape in a
    ``size`` frame, computed on the host by the recipe's own rounding (codec/geometry.py)."""
    heights, widths = np.asarray(heights, np.int64), np.asarray(widths, np.int64)
    frames = np.empty((len(heights), 4), np.int64)
    frames[:, 0], frames[:, 1] = heights, widths
    shapes = {(int(a), int(b)): resize_longest_shape(int(a), int(b), size)
              for a, b in set(zip(heights.tolist(), widths.tolist(), strict=True))}  # fmt: skip
    for k, (a, b) in enumerate(zip(heights.tolist(), widths.tolist(), strict=True)):
        frames[k, 2:] = shapes[(a, b)]
    return frames


def _ceil_div(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return -torch.div(-a, b, rounding_mode="floor")


def _first_at_or_after(source: torch.Tensor, src: torch.Tensor, dst: torch.Tensor):
    """The first output index o with floor((2o + 1) * src / (2 dst)) >= source, in [0, dst]:
    where a boundary at source row (column) ``source`` starts to show."""
    first = _ceil_div(2 * dst * source - src, 2 * src)
    return torch.minimum(first.clamp_(min=0), dst)


def expand_masks(
    runs: torch.Tensor,
    run_offsets: torch.Tensor,
    frames: torch.Tensor,
    size: int,
    *,
    slots: torch.Tensor | None = None,
    count: int | None = None,
    out: torch.Tensor | None = None,
    check: bool = True,
) -> torch.Tensor:
    """(count, size, size) bool masks from K masks' runs, on the runs' device.

    ``runs``: every mask's COCO runs back to back (int32, column-major, starting with
    background); mask k is ``runs[run_offsets[k]:run_offsets[k + 1]]`` (``run_offsets``:
    K + 1 int64, first 0, last ``len(runs)``). ``frames``: (K, 4) int64 (H, W, h, w) from
    ``mask_frames``. ``slots``: the output index of each mask (default 0..K-1) in a result of
    ``count`` masks (default K); slots no mask names stay all False (a batch's padding).
    ``out``: a (count, size, size) bool tensor to write into. ``check`` validates the input
    first (one device sync); the device stage skips it for runs the store's parser checked.
    """
    device = runs.device
    k = frames.shape[0]
    count = k if count is None else int(count)
    slots = torch.arange(k, device=device) if slots is None else slots.to(torch.int64)
    if check:
        _check(runs, run_offsets, frames, size, slots, count)
    cell = size * size
    total = runs.numel()
    run_mask = torch.repeat_interleave(
        torch.arange(k, device=device), run_offsets[1:] - run_offsets[:-1], output_size=total
    )
    lengths = runs.to(torch.int64)
    starts = torch.cumsum(lengths, 0) - lengths  # each run's start in the whole stream
    first_run = run_offsets[:-1]
    position = starts - starts[first_run][run_mask]  # ... and in its mask's column-major pixels
    per_run = frames[run_mask]
    height, width, h, w = per_run.unbind(1)
    column = torch.div(position, height, rounding_mode="floor")
    row = position - column * height
    x = _first_at_or_after(column, width, w)
    sampled = torch.div((2 * x + 1) * width, 2 * w, rounding_mode="floor") == column
    y = torch.where(sampled, _first_at_or_after(row, height, h), 0)  # else: all of column x
    cellpos = torch.where(x < w, x * size + y, cell).clamp_(max=cell)
    cellpos[first_run] = cell  # a mask's first run starts at 0 and flips nothing
    grid = torch.zeros(count * (cell + 1), dtype=torch.uint8, device=device)  # + a dump cell
    grid.index_put_(
        (slots[run_mask] * (cell + 1) + cellpos,),
        torch.ones(total, dtype=torch.uint8, device=device),
        accumulate=True,
    )
    grid = grid.view(count, cell + 1)
    grid.cumsum_(1)
    grid.bitwise_and_(1)
    columns = grid[:, :cell].unflatten(1, (size, size))  # (count, x, y)
    slot_frames = torch.ones((count, 4), dtype=torch.int64, device=device)
    slot_frames[slots] = frames
    _, width, h, w = (v[:, None] for v in slot_frames.unbind(1))
    xs = torch.arange(size, device=device)[None, :]
    source_col = torch.div((2 * xs + 1) * width, 2 * w, rounding_mode="floor")
    first_col = torch.where(xs < w, _first_at_or_after(source_col, width, w), xs)
    picked = torch.gather(columns, 1, first_col[:, :, None].expand(count, size, size))
    picked.masked_fill_((xs >= w)[:, :, None], 0)
    picked.masked_fill_((xs >= h)[:, None, :], 0)  # rows beyond h: xs doubles as the row index
    result = picked.transpose(1, 2)
    if out is None:
        return result.contiguous().view(torch.bool)
    if out.shape != (count, size, size) or out.dtype != torch.bool:
        raise ValueError(f"out must be bool of shape {(count, size, size)}, got {out.dtype} "
                         f"{tuple(out.shape)}")  # fmt: skip
    return out.copy_(result)


def _check(
    runs: torch.Tensor,
    run_offsets: torch.Tensor,
    frames: torch.Tensor,
    size: int,
    slots: torch.Tensor,
    count: int,
) -> None:
    """ValueError naming the first bad mask: what the numba decoder refuses, refused here."""
    k = frames.shape[0]
    if runs.dtype != torch.int32 or runs.dim() != 1:
        raise ValueError(f"runs must be 1-D int32, got {runs.dtype} of shape {tuple(runs.shape)}")
    if run_offsets.dtype != torch.int64 or run_offsets.shape != (k + 1,):
        raise ValueError(f"run_offsets must be {k + 1} int64 values (K + 1)")
    if frames.dtype != torch.int64 or frames.shape != (k, 4):
        raise ValueError("frames must be (K, 4) int64 rows (H, W, h, w)")
    if size < 1 or slots.shape != (k,):
        raise ValueError("size must be positive and slots K values")
    if k == 0:
        return
    offsets = run_offsets.cpu()
    if offsets[0] != 0 or offsets[-1] != runs.numel():
        raise ValueError("run_offsets must start at 0 and end at len(runs)")
    f = frames.cpu()
    empty = (f < 1).any(1) | (f[:, 2] > size) | (f[:, 3] > size) | (f[:, 0] * f[:, 1] >= 2**31)
    if empty.any():
        m = int(torch.nonzero(empty)[0, 0])
        raise ValueError(f"mask {m}: frame (H, W, h, w) = {tuple(f[m].tolist())} is empty, "
                         f"too large or not within {size} x {size}")  # fmt: skip
    counts = offsets[1:] - offsets[:-1]
    sums = torch.zeros(k, dtype=torch.int64).index_add_(
        0, torch.repeat_interleave(torch.arange(k), counts.clamp(min=0)), runs.cpu().to(torch.int64)
    ) if (counts >= 0).all() else torch.zeros(k, dtype=torch.int64)  # fmt: skip
    negative = torch.zeros(k, dtype=torch.bool)
    where = torch.nonzero(runs.cpu() < 0)[:, 0]
    negative[torch.searchsorted(offsets, where, right=True).clamp(max=k) - 1] = True
    bad = (counts < 1) | negative | (sums != f[:, 0] * f[:, 1])
    if bad.any():
        m = int(torch.nonzero(bad)[0, 0])
        raise ValueError(f"corrupt runs for mask {m}: none, negative, or not summing to "
                         f"{int(f[m, 0])} x {int(f[m, 1])}")  # fmt: skip
    s = slots.cpu()
    if ((s < 0) | (s >= count)).any() or len(torch.unique(s)) != k:
        raise ValueError(f"slots must be distinct indices below count={count}")

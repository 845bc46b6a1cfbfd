"""SAM's ResizeLongestSide + zero pad of decoded images with torch ops (a torch-using module),
for the device stage (train/device.py): any device, batched over images of one source shape.

It mirrors the CPU recipe (codec/jpeg.py) step by step, since a device decoder hands over
full-size pixels: libjpeg-turbo first shrinks inside the IDCT by the smallest M/8 (M = 1..8)
that keeps the target size, then OpenCV resizes bilinearly. Here a shrink by 1/2, 1/4 or 1/8
is a box average, another M/8 is what a scaled IDCT computes, redone on each 8 x 8 block of
pixels (forward DCT, keep the M x M lowest frequencies, M-point inverse: one linear map), then
a plain bilinear resize (half-pixel centres, as OpenCV's INTER_LINEAR). Against the CPU recipe
on the same decoded pixels, the mean absolute difference of an image is about 0.2-0.3 levels
of 255 on SA-1B-sized images (1500 x 2250 to 1024, 512, 256, 1500, 700) and under 1.0 on
small noisy synthetic ones (docs/gpu.md); a box or IDCT emulated on RGB pixels cannot follow
libjpeg's chroma handling exactly. Masks are exact.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cache

import numpy as np
import torch
import torch.nn.functional as F

CHUNK = 8  # images resized at once: float copies of 8 full-size SA-1B images are ~320 MB


def idct_scale(height: int, width: int, h: int, w: int) -> int:
    """The M of the M/8 shrink libjpeg-turbo applies for an (h, w) target (8: none), as
    simplejpeg's ``min_height``/``min_width`` choose it."""
    for m in range(1, 8):
        if math.ceil(height * m / 8) >= h and math.ceil(width * m / 8) >= w:
            return m
    return 8


def resize_like_cpu(pixels: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(G, H, W, 3) uint8 -> (G, h, w, 3) uint8, the CPU recipe's resize emulated."""
    _, height, width, _ = pixels.shape
    if (height, width) == (h, w):
        return pixels
    x = pixels.permute(0, 3, 1, 2).float()
    m = idct_scale(height, width, h, w)
    if m in (1, 2, 4):  # measured closer to libjpeg-turbo than the block IDCT for these
        x = F.avg_pool2d(x, 8 // m, ceil_mode=True)
    elif m < 8:
        x = _scaled_idct(x, m)[:, :, : math.ceil(height * m / 8), : math.ceil(width * m / 8)]
    if x.shape[2:] != (h, w):
        x = F.interpolate(x, size=(h, w), mode="bilinear", antialias=False, align_corners=False)
    return x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


def _scaled_idct(x: torch.Tensor, m: int) -> torch.Tensor:
    """(G, C, H, W) -> (G, C, ceil8(H) * m / 8, ceil8(W) * m / 8): each 8 x 8 block (edges
    replicated, as encoders pad) mapped to the M x M a scaled IDCT gives from its DCT."""
    g, c, height, width = x.shape
    x = F.pad(x, (0, -width % 8, 0, -height % 8), mode="replicate")
    rows, cols = x.shape[2] // 8, x.shape[3] // 8
    a = _block_map(m).to(x.device)
    x = torch.einsum("mi,gcrisj,nj->gcrmsn", a, x.view(g, c, rows, 8, cols, 8), a)
    return x.reshape(g, c, rows * m, cols * m)


@cache
def _block_map(m: int) -> torch.Tensor:
    """(m, 8): the M-point orthonormal inverse DCT of an 8-point DCT's first M coefficients,
    scaled by sqrt(M / 8) so that a flat block keeps its value."""

    def dct(n: int) -> np.ndarray:
        u, x = np.arange(n)[:, None], np.arange(n)[None, :]
        basis = np.sqrt(2 / n) * np.cos((2 * x + 1) * u * np.pi / (2 * n))
        basis[0] /= np.sqrt(2)
        return basis

    return torch.from_numpy(np.sqrt(m / 8) * dct(m).T @ dct(8)[:m]).float()


def place_images(
    out: torch.Tensor,
    slots: Sequence[int],
    pixels: Sequence[torch.Tensor],
    sizes: Sequence[tuple[int, int]],
) -> None:
    """Resize ``pixels[i]`` ((H, W, 3) uint8) to ``sizes[i]`` into ``out[slots[i]]`` (a
    zeroed (B, S, S, 3) batch: the padding stays 0), in groups of one source shape."""
    groups: dict[tuple, list[int]] = {}
    for i, p in enumerate(pixels):
        groups.setdefault((*p.shape[:2], *sizes[i]), []).append(i)
    for (_, _, h, w), members in groups.items():
        for start in range(0, len(members), CHUNK):
            chunk = members[start : start + CHUNK]
            batch = torch.stack([pixels[i] for i in chunk])
            resized = resize_like_cpu(batch, h, w)
            for j, i in enumerate(chunk):
                out[slots[i], :h, :w] = resized[j]

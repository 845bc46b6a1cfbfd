"""JPEG decode and SAM's ResizeLongestSide, shared by the packer and the training reader.

libjpeg-turbo first shrinks by 1/2, 1/4 or 1/8 inside the IDCT (simplejpeg's min_width/height:
the smallest scale still >= the target), which filters properly; the remaining factor is then
in (1/2, 1], where OpenCV's bilinear resize (much faster than PIL's) does not alias.
Upscaling is bilinear too.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import simplejpeg

from .geometry import resize_longest_shape


def resize_longest(
    jpeg: Any, height: int, width: int, longest: int, out: np.ndarray | None = None
) -> np.ndarray:
    """(h, w, 3) uint8 RGB with the longest side ``longest`` (SAM's target shape)."""
    h, w = resize_longest_shape(height, width, longest)
    pixels = simplejpeg.decode_jpeg(jpeg, colorspace="RGB", min_width=w, min_height=h)
    if out is None:
        out = np.empty((h, w, 3), np.uint8)
    if pixels.shape[:2] != (h, w):
        cv2.resize(pixels, (w, h), dst=out, interpolation=cv2.INTER_LINEAR)
    else:
        out[...] = pixels
    return out


def resize_pixels(pixels: np.ndarray, h: int, w: int, out: np.ndarray | None = None) -> np.ndarray:
    """(h, w, 3) resize of an image: OpenCV's area average to shrink, bilinear to grow."""
    shrink = h < pixels.shape[0] or w < pixels.shape[1]
    flag = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    if out is None:
        return cv2.resize(pixels, (w, h), interpolation=flag)
    cv2.resize(pixels, (w, h), dst=out, interpolation=flag)
    return out


def pad_bottom_right(out: np.ndarray, h: int, w: int) -> None:
    """Zero everything of a square buffer outside its top-left (h, w) image."""
    out[h:] = 0
    out[:h, w:] = 0


def decode_image(jpeg: Any, height: int, width: int, size: int, out: np.ndarray) -> None:
    """Decode + SAM ResizeLongestSide(size) + zero pad into out (size, size, 3) uint8."""
    h, w = resize_longest_shape(height, width, size)
    resize_longest(jpeg, height, width, size, out=out[:h, :w])
    pad_bottom_right(out, h, w)


def decode_resized(jpeg: Any, size: int, out: np.ndarray) -> tuple[int, int]:
    """Decode a pre-resized JPEG (already SAM's shape) into out (size, size, 3) and pad."""
    h, w, _, _ = simplejpeg.decode_jpeg_header(jpeg)
    out[:h, :w] = simplejpeg.decode_jpeg(jpeg, colorspace="RGB")
    pad_bottom_right(out, h, w)
    return h, w


def encode_jpeg(pixels: np.ndarray, quality: int) -> bytes:
    return simplejpeg.encode_jpeg(np.ascontiguousarray(pixels), quality=quality, colorspace="RGB")

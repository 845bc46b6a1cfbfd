"""Render one sample as a picture a person can read: the image, its largest masks, their boxes
and prompt points, and a caption. For eyeballing a store (does each mask sit on its object, is
the box its mask's?), so it stays cheap: the image is shrunk first and the masks are decoded at
the shrunk size, never at full size.
"""

from __future__ import annotations

import colorsys
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .errors import ConfigError
from .read.sample import Sample

DEFAULT_LONGEST = 1500  # SA-1B images are ~1500x2250: shown at 1000x1500 by default
ALPHA = 0.45  # fill opacity: the photo stays readable under every mask
GOLDEN = 0.618033988749895  # hue step: consecutive colours land far apart on the wheel
ONE_LINE_WIDTH = 480  # narrower pictures put each caption field on its own line
CAPTION_FIELDS = 3
CAPTION_BG = (24, 24, 24)
CAPTION_FG = (235, 235, 235)


def render_size(
    height: int, width: int, *, longest: int | None = DEFAULT_LONGEST, scale: float | None = None
) -> tuple[int, int]:
    """(h, w) of the rendered image (caption excluded): ``scale`` times the source if given,
    else shrunk so the long side is at most ``longest`` (never enlarged; None keeps full size).
    """
    if scale is not None:
        if not scale > 0:
            raise ConfigError(f"scale must be positive, got {scale}")
        factor = scale
    elif longest is not None:
        if longest < 1:
            raise ConfigError(f"longest must be at least 1, got {longest}")
        factor = min(1.0, longest / max(height, width))
    else:
        factor = 1.0
    return max(1, round(height * factor)), max(1, round(width * factor))


def caption_height(width: int) -> int:
    """Height of the caption strip above a picture ``width`` pixels wide."""
    lines = 1 if width >= ONE_LINE_WIDTH else CAPTION_FIELDS
    return lines * (_font_size(width) + 4) + 6


def palette(n: int) -> np.ndarray:
    """(n, 3) uint8 saturated colours, hue stepped by the golden ratio so neighbours differ."""
    hues = (np.arange(n) * GOLDEN) % 1.0
    rgb = [colorsys.hsv_to_rgb(h, 0.85, 1.0) for h in hues]
    return (np.array(rgb, dtype=np.float64).reshape(n, 3) * 255).round().astype(np.uint8)


def render_sample(
    sample: Sample,
    *,
    max_masks: int = 50,
    longest: int | None = DEFAULT_LONGEST,
    scale: float | None = None,
) -> Image.Image:
    """The image with its ``max_masks`` largest masks (by area) filled, outlined, boxed and
    their prompt points dotted, smaller masks over larger ones so parts show over wholes; a
    caption strip on top says image id, size and masks shown / total. ``scale`` overrides
    ``longest`` (see render_size).
    """
    if max_masks < 0:
        raise ConfigError(f"max_masks must be non-negative, got {max_masks}")
    height, width = sample.height, sample.width
    h, w = render_size(height, width, longest=longest, scale=scale)
    image = sample.image()
    if (h, w) != image.shape[:2]:
        resized = Image.fromarray(image).resize((w, h), Image.Resampling.BILINEAR, reducing_gap=2)
        image = np.asarray(resized)
    # Largest first: drawing in this order leaves the smaller masks on top.
    chosen = np.argsort(-np.asarray(sample.area), kind="stable")[:max_masks]
    colors = palette(len(chosen))
    canvas = image.copy()
    line = 1 if max(h, w) < 600 else 2
    if len(chosen):
        masks = sample.masks(chosen, size=(h, w)).view(np.bool_)
        _paint_masks(canvas, masks, colors, line)
    picture = Image.fromarray(canvas)
    _draw_boxes_and_points(picture, sample, chosen, colors, (h / height, w / width), line)

    scaled = f" shown {w}x{h}" if (h, w) != (height, width) else ""
    fields = [
        f"image_id {sample.image_id}",
        f"{width}x{height}{scaled}",
        f"masks {len(chosen)}/{len(sample)}" + (" (largest)" if len(chosen) < len(sample) else ""),
    ]
    return _with_caption(picture, fields)


def save_sample_png(sample: Sample, path: str | os.PathLike, **kw) -> Path:
    """Render (keywords as render_sample) and write a PNG; returns the path written."""
    path = Path(path)
    render_sample(sample, **kw).save(path, format="PNG")
    return path


def _paint_masks(canvas: np.ndarray, masks: np.ndarray, colors: np.ndarray, line: int) -> None:
    """Blend each pixel once with the colour of the last (smallest) mask covering it, then draw
    every mask's outline in order, so a part's edge stays visible inside its whole."""
    h, w = canvas.shape[:2]
    label = np.full((h, w), -1, dtype=np.int32)
    boxes = []
    for k, mask in enumerate(masks):
        box = _tight_box(mask)
        boxes.append(box)
        if box is not None:
            y0, y1, x0, x1 = box
            label[y0:y1, x0:x1][mask[y0:y1, x0:x1]] = k
    covered = label >= 0
    blend = (1 - ALPHA) * canvas[covered] + ALPHA * colors[label[covered]].astype(np.float64)
    canvas[covered] = blend.round().astype(np.uint8)
    for k, (mask, box) in enumerate(zip(masks, boxes, strict=True)):
        if box is not None:
            y0, y1, x0, x1 = box
            canvas[y0:y1, x0:x1][_boundary(mask[y0:y1, x0:x1], line)] = colors[k]


def _tight_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(y0, y1, x0, x1) of the mask's pixels, to work on a crop; None if the mask is empty."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return None
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _boundary(mask: np.ndarray, width: int) -> np.ndarray:
    """Mask pixels within ``width`` px of its edge: mask & ~eroded(mask). Erosion is by numpy
    shifts over the 4-neighbourhood; beyond the array counts as outside, so a mask touching the
    image border is outlined along it."""
    inner = np.pad(mask, 1)
    for _ in range(width):
        eroded = inner.copy()
        eroded[1:] &= inner[:-1]
        eroded[:-1] &= inner[1:]
        eroded[:, 1:] &= inner[:, :-1]
        eroded[:, :-1] &= inner[:, 1:]
        inner = eroded
    return mask & ~inner[1:-1, 1:-1]


def _draw_boxes_and_points(
    picture: Image.Image,
    sample: Sample,
    chosen: np.ndarray,
    colors: np.ndarray,
    factors: tuple[float, float],
    line: int,
) -> None:
    fy, fx = factors
    draw = ImageDraw.Draw(picture)
    bbox = np.asarray(sample.bbox)
    points = sample.point_coords
    radius = line + 2
    for k, j in enumerate(chosen.tolist()):
        color = tuple(int(c) for c in colors[k])
        x, y, bw, bh = bbox[j]
        x0, y0 = x * fx, y * fy
        x1, y1 = max(x0, (x + bw) * fx - 1), max(y0, (y + bh) * fy - 1)
        draw.rectangle((x0, y0, x1, y1), outline=color, width=1)
        for px, py in np.asarray(points[j]).reshape(-1, 2)[:1]:
            cx, cy = px * fx, py * fy
            draw.ellipse(
                (cx - radius, cy - radius, cx + radius, cy + radius), fill=color, outline=(0, 0, 0)
            )


def _with_caption(picture: Image.Image, fields: list[str]) -> Image.Image:
    w, h = picture.size
    strip = caption_height(w)
    out = Image.new("RGB", (w, h + strip), CAPTION_BG)
    out.paste(picture, (0, strip))
    draw = ImageDraw.Draw(out)
    size = _font_size(w)
    lines = ["   ".join(fields)] if w >= ONE_LINE_WIDTH else fields
    for n, text in enumerate(lines):
        draw.text((4, 3 + n * (size + 4)), text, fill=CAPTION_FG, font=_font(size))
    return out


def _font_size(width: int) -> int:
    return int(np.clip(width // 45, 11, 24))


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size)

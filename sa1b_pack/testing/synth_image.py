"""Synthetic SA-1B images and annotations: photo-like JPEG content, irregular nested masks.

The masks are star-shaped blobs with smooth random radii (wholes), intersections of smaller
blobs with their parent (parts), border-touching, single-pixel and one-pixel-wide masks, of
every scale; annotations carry the released files' quirks (bbox one pixel smaller than the
mask's, predicted_iou above 1, prompt points outside their mask). Encoded by pycocotools, so
every counts string is genuine.
"""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_util

BBOX_QUIRK_RATE = 0.3  # share of bboxes one pixel smaller in w and h than toBbox, as released
POINT_OUTSIDE_RATE = 0.05
SUB_CROP_RATE = 0.2
GRAIN = 4.0  # std of per-pixel luma noise: with JPEG_QUALITY it sets the bytes per image
# Mask kinds after the first ("big", a background-like region): cumulative probabilities.
KIND_CDF = (("whole", 0.55), ("part", 0.88), ("border", 0.94), ("pixel", 0.97), ("line", 1.0))
Mask = tuple[int, int, np.ndarray]  # (y0, x0, bool array of the tight bbox)


def mask_count(rng: np.random.Generator, small: bool) -> int:
    if small:
        return int(rng.integers(5, 21))
    # Lognormal with median 85 and sigma 0.6: mean ~100, ~7% of images above 200.
    return int(np.clip(round(rng.lognormal(np.log(85.0), 0.6)), 1, 600))


def make_masks(rng: np.random.Generator, h: int, w: int, n: int) -> list[Mask]:
    """Irregular blobs at every scale; parts nested in earlier masks; border, pixel and line."""
    short = min(h, w)
    masks: list[Mask] = []
    while len(masks) < n:
        if not masks:
            kind = "big"
        else:
            u = rng.random()
            kind = next(k for k, p in KIND_CDF if u < p)
        if kind == "big":  # background-like region, clipped by the image border
            cy, cx = h * rng.uniform(0.3, 0.7), w * rng.uniform(0.3, 0.7)
            mask = _blob(rng, cy, cx, max(h, w) * rng.uniform(0.3, 0.6), h, w)
        elif kind == "whole":
            r0 = np.exp(rng.uniform(np.log(2.5), np.log(0.5 * short)))
            mask = _blob(rng, h * rng.random(), w * rng.random(), r0, h, w)
        elif kind == "border":
            r0 = np.exp(rng.uniform(np.log(2.0), np.log(0.3 * short)))
            cy, cx = h * rng.random(), w * rng.random()
            side = int(rng.integers(4))
            cy, cx = [(0.0, cx), (float(h), cx), (cy, 0.0), (cy, float(w))][side]
            mask = _blob(rng, cy, cx, r0, h, w)
        elif kind == "part":
            mask = _part(rng, masks[rng.integers(len(masks))], h, w)
        elif kind == "pixel":
            mask = (int(rng.integers(h)), int(rng.integers(w)), np.ones((1, 1), bool))
        else:  # a 1-pixel-wide segment
            length = int(rng.integers(2, max(3, short // 4)))
            y0, x0 = int(rng.integers(h)), int(rng.integers(w))
            shape = (min(length, h - y0), 1) if rng.random() < 0.5 else (1, min(length, w - x0))
            mask = (y0, x0, np.ones(shape, bool))
        if mask is not None:
            masks.append(mask)
    return masks


def _part(rng: np.random.Generator, parent: Mask, h: int, w: int) -> Mask | None:
    """A smaller blob intersected with `parent`, centred on one of its pixels: never empty."""
    py, px, pm = parent
    area = int(pm.sum())
    flat = np.flatnonzero(pm)[rng.integers(area)]
    cy, cx = py + flat // pm.shape[1] + 0.5, px + flat % pm.shape[1] + 0.5
    blob = _blob(rng, cy, cx, max(1.0, np.sqrt(area / np.pi) * rng.uniform(0.15, 0.7)), h, w)
    if blob is None:
        return None
    by, bx, bm = blob
    y0, x0 = max(py, by), max(px, bx)
    y1, x1 = min(py + pm.shape[0], by + bm.shape[0]), min(px + pm.shape[1], bx + bm.shape[1])
    if y1 <= y0 or x1 <= x0:
        return None
    both = pm[y0 - py : y1 - py, x0 - px : x1 - px] & bm[y0 - by : y1 - by, x0 - bx : x1 - bx]
    return _tight(y0, x0, both)


def _blob(rng: np.random.Generator, cy: float, cx: float, r0: float, h: int, w: int) -> Mask | None:
    """Star-shaped polygon r(t) = r0 (1 + sum a_k cos(k t + phi_k)), stretched and rotated."""
    k = np.arange(1, 7)[:, None]
    amp = rng.random((6, 1)) / k**1.3
    amp *= rng.uniform(0.2, 0.8) / amp.sum()  # sum of |a_k| < 1 keeps r(t) > 0
    phase = rng.uniform(0, 2 * np.pi, (6, 1))
    theta = np.linspace(0, 2 * np.pi, int(np.clip(1.5 * r0, 12, 256)), endpoint=False)
    r = r0 * (1 + (amp * np.cos(k * theta + phase)).sum(0))
    stretch, rot = np.exp(rng.normal(0, 0.3)), rng.uniform(0, np.pi)
    u, v = r * np.cos(theta) * stretch, r * np.sin(theta) / stretch
    xs = cx + u * np.cos(rot) - v * np.sin(rot)
    ys = cy + u * np.sin(rot) + v * np.cos(rot)
    return _fill_polygon(ys, xs, h, w)


def _fill_polygon(ys: np.ndarray, xs: np.ndarray, h: int, w: int) -> Mask | None:
    """Even-odd scanline fill of pixel centres, only inside the polygon's clipped bbox."""
    y0, y1 = max(0, int(np.floor(ys.min()))), min(h, int(np.ceil(ys.max())))
    x0, x1 = max(0, int(np.floor(xs.min()))), min(w, int(np.ceil(xs.max())))
    if y1 <= y0 or x1 <= x0:
        return None
    bh, bw = y1 - y0, x1 - x0
    ya, xa = ys - y0, xs - x0
    yb, xb = np.roll(ya, -1), np.roll(xa, -1)
    # Edge e crosses the centres of rows j with min(ya, yb) <= j + 0.5 < max(ya, yb).
    j0 = np.clip(np.ceil(np.minimum(ya, yb) - 0.5), 0, bh).astype(np.int64)
    j1 = np.clip(np.ceil(np.maximum(ya, yb) - 0.5), 0, bh).astype(np.int64)
    count = j1 - j0
    edge = np.repeat(np.arange(len(ya)), count)
    rows = j0[edge] + np.arange(len(edge)) - np.repeat(np.cumsum(count) - count, count)
    t = (rows + 0.5 - ya[edge]) / (yb[edge] - ya[edge])
    cols = np.clip(np.ceil(xa[edge] + t * (xb[edge] - xa[edge]) - 0.5), 0, bw).astype(np.int64)
    toggles = np.zeros((bh, bw + 1), np.uint8)
    np.add.at(toggles, (rows, cols), 1)
    inside = (np.cumsum(toggles, axis=1, dtype=np.uint8)[:, :bw] & 1).astype(bool)
    return _tight(y0, x0, inside)


def _tight(y0: int, x0: int, m: np.ndarray) -> Mask | None:
    rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
    if len(rows) == 0:
        return None
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    return y0 + int(r0), x0 + int(c0), m[r0:r1, c0:c1]


def paint(rng: np.random.Generator, h: int, w: int, masks: list[Mask]) -> np.ndarray:
    """Smooth background, masks tinted with their own colours, mild grain: a photo-ish JPEG."""
    grid = rng.uniform(30, 225, (int(rng.integers(2, 6)), int(rng.integers(2, 6)), 3))
    img = _upsample(grid.astype(np.float32), h, w)
    labels = np.zeros((h, w), np.uint16)  # topmost mask per pixel, 0 for none
    for label, (y0, x0, m) in enumerate(masks, 1):
        np.copyto(labels[y0 : y0 + m.shape[0], x0 : x0 + m.shape[1]], label, where=m)
    colours = rng.uniform(10, 245, (len(masks) + 1, 3)).astype(np.float32)
    alpha = np.full(len(masks) + 1, 0.65, np.float32)
    alpha[0] = 0.0
    tint = alpha[labels][..., None]
    img += tint * (colours[labels] - img)
    img += _upsample(rng.normal(0, 9, (h // 8 + 2, w // 8 + 2, 1)).astype(np.float32), h, w)
    img += rng.standard_normal((h, w, 1), dtype=np.float32) * GRAIN
    return np.clip(img, 0, 255, out=img).astype(np.uint8)


def _upsample(grid: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear resize of a small (gh, gw, c) float32 grid to (h, w, c) by two matmuls."""
    rows, cols = _lerp_matrix(h, grid.shape[0]), _lerp_matrix(w, grid.shape[1])
    tmp = np.einsum("yi,ijc->ycj", rows, grid)  # (h, c, gw)
    return np.ascontiguousarray((tmp @ cols.T).transpose(0, 2, 1))


def _lerp_matrix(n_out: int, n_in: int) -> np.ndarray:
    pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    i0 = np.minimum(pos.astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    frac = (pos - i0).astype(np.float32)
    out = np.zeros((n_out, n_in), np.float32)
    np.add.at(out, (np.arange(n_out), i0), 1 - frac)
    np.add.at(out, (np.arange(n_out), i1), frac)
    return out


def annotate(rng: np.random.Generator, h: int, w: int, masks: list[Mask]) -> list[dict]:
    """Encode each mask with pycocotools on one reused Fortran canvas; add SA-1B's fields."""
    canvas = np.zeros((h, w), np.uint8, order="F")
    ids = int(rng.integers(100_000)) + np.cumsum(rng.integers(1, 50, len(masks)))
    full_box = [0.0, 0.0, float(w), float(h)]
    annotations = []
    for ann_id, i in zip(ids.tolist(), rng.permutation(len(masks)).tolist(), strict=True):
        y0, x0, m = masks[i]
        mh, mw = m.shape
        canvas[y0 : y0 + mh, x0 : x0 + mw] = m
        rle = mask_util.encode(canvas)
        canvas[y0 : y0 + mh, x0 : x0 + mw] = 0
        bbox = mask_util.toBbox(rle).tolist()
        if rng.random() < BBOX_QUIRK_RATE and bbox[2] > 1 and bbox[3] > 1:
            bbox[2] -= 1.0
            bbox[3] -= 1.0
        area = int(np.count_nonzero(m))
        if rng.random() < POINT_OUTSIDE_RATE:
            point = [float(rng.uniform(0, w)), float(rng.uniform(0, h))]
        else:
            flat = int(np.flatnonzero(m)[rng.integers(area)])
            point = [x0 + flat % mw + 0.5, y0 + flat // mw + 0.5]
        crop = full_box
        if rng.random() < SUB_CROP_RATE:
            cx0, cy0 = int(rng.integers(x0 + 1)), int(rng.integers(y0 + 1))
            cx1, cy1 = int(rng.integers(x0 + mw, w + 1)), int(rng.integers(y0 + mh, h + 1))
            crop = [float(cx0), float(cy0), float(cx1 - cx0), float(cy1 - cy0)]
        annotations.append(
            {
                "id": ann_id,
                "segmentation": {"size": [h, w], "counts": rle["counts"].decode("ascii")},
                "area": area,
                "bbox": bbox,
                "predicted_iou": float(1.02 - rng.gamma(2.0, 0.04)),
                "stability_score": float(0.85 + 0.15 * rng.beta(4.0, 1.2)),
                "point_coords": [point],
                "crop_box": list(crop),
            }
        )
    return annotations

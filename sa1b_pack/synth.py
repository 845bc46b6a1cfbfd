"""Synthetic SA-1B-format tar shards for tests, demos and benchmarks.

Real SA-1B cannot be fetched everywhere, so this writes shards with what a packer meets in the
released ones (see SA1B_FORMAT.md): shuffled members, three member-name layouts, optional gzip
under a `.tar` name, ~1500 px photo-like JPEGs of realistic size, heavy-tailed mask counts,
irregular overlapping and nested masks encoded by pycocotools, and the known field quirks
(bbox one pixel smaller, predicted_iou above 1, prompt points outside their mask, sparse ids).
Output is byte-identical for the same arguments: every draw comes from (seed, shard, image).
"""

from __future__ import annotations

import contextlib
import gzip as gzip_lib
import io
import os
import tarfile
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import joblib
import numpy as np
import orjson
import simplejpeg
from pycocotools import mask as mask_util
from tqdm import tqdm

FULL_SHORT_SIDE = 1500
SMALL_SHORT_SIDES = (96, 160)  # inclusive range of the short side in small mode
JPEG_QUALITY = 90
# (width, height) in units of the short side: 1500x2250, 2250x1500, 1500x2000, 2000x1500, square
ASPECTS = ((2, 2, 3), (2, 3, 2), (3, 3, 4), (3, 4, 3), (1, 1, 1))  # (short, width, height)
ASPECT_P = (0.3, 0.3, 0.15, 0.15, 0.1)
LAYOUTS = ("root", "dot", "folder")
IDS_PER_SHARD = 100_000  # image ids of shard s lie in (s * IDS_PER_SHARD, (s + 1) * IDS_PER_SHARD)
MAX_ID_GAP = 4  # consecutive image ids differ by 1..4
BBOX_QUIRK_RATE = 0.3  # share of bboxes one pixel smaller in w and h than toBbox, as released
POINT_OUTSIDE_RATE = 0.05
SUB_CROP_RATE = 0.2
TAR_MTIME = 1680307200  # 2023-04-01; fixed so that shards are byte-identical
# Mask kinds after the first ("big", a background-like region): cumulative probabilities.
KIND_CDF = (("whole", 0.55), ("part", 0.88), ("border", 0.94), ("pixel", 0.97), ("line", 1.0))

Mask = tuple[int, int, np.ndarray]  # (y0, x0, bool array of the tight bbox)


def synth_sample(
    rng: np.random.Generator, image_id: int, *, small: bool, n_masks: int | None = None
) -> tuple[bytes, dict]:
    """One image: (JPEG bytes, annotation dict as in `sa_<id>.json`).

    `n_masks` overrides the heavy-tailed mask count (mean ~100 full size, 5-20 small); 0 gives
    an image without annotations, as a few released images are.
    """
    short = FULL_SHORT_SIDE
    if small:
        short = int(rng.integers(SMALL_SHORT_SIDES[0], SMALL_SHORT_SIDES[1], endpoint=True))
    unit, aw, ah = ASPECTS[rng.choice(len(ASPECTS), p=ASPECT_P)]
    width, height = short * aw // unit, short * ah // unit
    if n_masks is None:
        n_masks = _mask_count(rng, small)
    masks = _make_masks(rng, height, width, n_masks)
    pixels = _paint(rng, height, width, masks)
    jpeg = simplejpeg.encode_jpeg(pixels, quality=JPEG_QUALITY, colorspace="RGB")
    image = {
        "image_id": image_id,
        "width": width,
        "height": height,
        "file_name": f"sa_{image_id}.jpg",
    }
    return jpeg, {"image": image, "annotations": _annotate(rng, height, width, masks)}


def synth_shard(
    out_dir: str | os.PathLike,
    shard_index: int,
    images: int,
    *,
    small: bool = False,
    seed: int = 0,
    layout: str = "root",
    shuffle: bool = True,
    gzip: bool = False,
    progress: bool = False,
    empty_images: int | None = None,
) -> Path:
    """Write `out_dir/sa_{shard_index:06d}.tar` atomically and return its path.

    `empty_images` images (at random positions, at most `images // 2`) get no annotations, as a
    few released images have none. None means one per shard in small mode, so every test shard
    of 2+ images has that case, and one per 200 images in full mode.
    """
    with tqdm(total=images, disable=not progress, unit="img", desc=f"sa_{shard_index:06d}") as bar:
        return _write_shard(
            Path(out_dir),
            shard_index,
            images,
            small,
            seed,
            layout,
            shuffle,
            gzip,
            empty_images,
            bar,
        )


def synth_shards(
    out_dir: str | os.PathLike,
    shard_indices: Iterable[int],
    images_per_shard: int,
    *,
    small: bool = False,
    seed: int = 0,
    layout: str = "root",
    shuffle: bool = True,
    gzip: bool = False,
    jobs: int = 1,
    progress: bool = True,
    empty_images: int | None = None,
) -> list[Path]:
    """`synth_shard` for each index, over `jobs` joblib processes; paths in index order.

    With `jobs > 1` the progress bar advances by whole shards as they finish.
    """
    indices = [int(i) for i in shard_indices]
    if len(set(indices)) != len(indices):
        raise ValueError(f"duplicate shard indices in {indices}")
    args = (small, seed, layout, shuffle, gzip, empty_images)
    total = len(indices) * images_per_shard
    with tqdm(total=total, disable=not progress, unit="img", desc="synth") as bar:
        if jobs == 1 or len(indices) <= 1:
            return [_write_shard(Path(out_dir), i, images_per_shard, *args, bar) for i in indices]
        tasks = (
            joblib.delayed(_write_shard)(Path(out_dir), i, images_per_shard, *args, None)
            for i in indices
        )
        paths = []
        for path in joblib.Parallel(n_jobs=jobs, return_as="generator")(tasks):
            paths.append(path)
            bar.update(images_per_shard)
        return paths


def _write_shard(
    out_dir: Path,
    shard_index: int,
    images: int,
    small: bool,
    seed: int,
    layout: str,
    shuffle: bool,
    gzip: bool,
    empty_images: int | None,
    bar: tqdm | None,
) -> Path:
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if empty_images is None:
        empty_images = 1 if small else images // 200
    if not 0 <= images < IDS_PER_SHARD or shard_index < 0 or seed < 0 or empty_images < 0:
        raise ValueError("need 0 <= images < 100000 and non-negative shard_index, seed, empty")
    name = f"sa_{shard_index:06d}"
    prefix = {"root": "", "dot": "./", "folder": f"{name}/"}[layout]
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.tar"
    tmp = out_dir / f"{name}.tar.tmp"
    # Tags 0 (shard) and 1 (image) keep the seed sequences distinct: SeedSequence zero-pads.
    rng = np.random.default_rng([seed, shard_index, 0, 0])
    gap = max(1, min(MAX_ID_GAP, (IDS_PER_SHARD - 1) // max(images, 1)))
    ids = shard_index * IDS_PER_SHARD + np.cumsum(rng.integers(1, gap + 1, images))
    empty = set(rng.permutation(images)[: min(empty_images, images // 2)].tolist())

    def members() -> Iterator[tuple[str, bytes]]:
        for k, image_id in enumerate(ids.tolist()):
            image_rng = np.random.default_rng([seed, shard_index, 1, k])
            jpeg, record = synth_sample(
                image_rng, image_id, small=small, n_masks=0 if k in empty else None
            )
            yield f"{prefix}sa_{image_id}.jpg", jpeg
            yield f"{prefix}sa_{image_id}.json", orjson.dumps(record)
            if bar is not None:
                bar.update(1)

    try:
        with open(tmp, "wb") as raw, _maybe_gzip(raw, gzip) as fileobj:
            with tarfile.open(fileobj=fileobj, mode="w", format=tarfile.GNU_FORMAT) as tar:
                if layout == "folder":
                    tar.addfile(_tar_info(prefix, 0, tarfile.DIRTYPE))
                if shuffle:
                    _add_shuffled(tar, members(), rng, out_dir)
                else:
                    for member, data in members():
                        tar.addfile(_tar_info(member, len(data)), io.BytesIO(data))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _add_shuffled(
    tar: tarfile.TarFile,
    members: Iterator[tuple[str, bytes]],
    rng: np.random.Generator,
    tmp_dir: Path,
) -> None:
    """Add members in a random order over the whole tar, spooling to disk to bound memory."""
    with tempfile.TemporaryFile(dir=tmp_dir, prefix=".synth-spool-") as spool:
        entries = []
        for member, data in members:
            entries.append((member, spool.tell(), len(data)))
            spool.write(data)
        for i in rng.permutation(len(entries)).tolist():
            member, offset, size = entries[i]
            spool.seek(offset)
            tar.addfile(_tar_info(member, size), spool)


def _maybe_gzip(raw: BinaryIO, gzip: bool) -> contextlib.AbstractContextManager[BinaryIO]:
    if not gzip:
        return contextlib.nullcontext(raw)
    return gzip_lib.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6)


def _tar_info(name: str, size: int, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.type, info.mtime = size, kind, TAR_MTIME
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _mask_count(rng: np.random.Generator, small: bool) -> int:
    if small:
        return int(rng.integers(5, 21))
    # Lognormal with median 85 and sigma 0.6: mean ~100, ~7% of images above 200.
    return int(np.clip(round(rng.lognormal(np.log(85.0), 0.6)), 1, 600))


def _make_masks(rng: np.random.Generator, h: int, w: int, n: int) -> list[Mask]:
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


def _paint(rng: np.random.Generator, h: int, w: int, masks: list[Mask]) -> np.ndarray:
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
    img += rng.standard_normal((h, w, 1), dtype=np.float32) * 4.0
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


def _annotate(rng: np.random.Generator, h: int, w: int, masks: list[Mask]) -> list[dict]:
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

"""Synthetic SA-1B-format tar shards for tests, demos and benchmarks.

Real SA-1B cannot be fetched everywhere, so this writes shards with what a packer meets in the
released ones: shuffled members, three member-name layouts, optional gzip
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
from tqdm import tqdm

from ..progress import progress_bar
from .synth_image import annotate, make_masks, mask_count, paint

FULL_SHORT_SIDE = 1500
SMALL_SHORT_SIDES = (96, 160)  # inclusive range of the short side in small mode
JPEG_QUALITY = 95  # as released: luma quantisation table 2, 1, 1, 2, ...; chroma 4:2:0
# (width, height) in units of the short side: 1500x2250, 2250x1500, 1500x2000, 2000x1500, square
ASPECTS = ((2, 2, 3), (2, 3, 2), (3, 3, 4), (3, 4, 3), (1, 1, 1))  # (short, width, height)
ASPECT_P = (0.3, 0.3, 0.15, 0.15, 0.1)
LAYOUTS = ("root", "dot", "folder")
IDS_PER_SHARD = 100_000  # image ids of shard s lie in (s * IDS_PER_SHARD, (s + 1) * IDS_PER_SHARD)
MAX_ID_GAP = 4  # consecutive image ids differ by 1..4
TAR_MTIME = 1680307200  # 2023-04-01; fixed so that shards are byte-identical


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
        n_masks = mask_count(rng, small)
    masks = make_masks(rng, height, width, n_masks)
    pixels = paint(rng, height, width, masks)
    jpeg = simplejpeg.encode_jpeg(
        pixels, quality=JPEG_QUALITY, colorspace="RGB", colorsubsampling="420"
    )
    image = {
        "image_id": image_id,
        "width": width,
        "height": height,
        "file_name": f"sa_{image_id}.jpg",
    }
    return jpeg, {"image": image, "annotations": annotate(rng, height, width, masks)}


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
    desc = f"sa_{shard_index:06d}"
    with progress_bar(total=images, enabled=progress, unit="img", desc=desc) as bar:
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
    with progress_bar(total=total, enabled=progress, unit="img", desc="synth") as bar:
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

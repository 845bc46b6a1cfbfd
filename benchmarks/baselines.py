"""What users run instead of sa1b_pack: the source read the usual ways, and the seed's recipe.

The seed-style reader takes a sample's JPEG and JSON however they arrive (extracted files, tar
members, WebDataset or LitData bytes) and does PIL decode + json + pycocotools decode of every
mask, then filter, draw and PIL resizes (SAM's ResizeLongestSide + pad). The peers in
peers.py, the full-size reader of bench_store.py and the mask resizes of bench_masks.py share
these functions, so peers differ only in how the bytes reach them. Torch-free: peer_datasets.py
wraps the arrays in tensors.
"""

from __future__ import annotations

import io
import json
import tarfile
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_util


@dataclass
class SourceSample:
    """One image of a source shard, as its tar members hold it."""

    image_id: int
    jpeg: bytes
    json: bytes

    def record(self) -> dict[str, Any]:
        return json.loads(self.json)

    def rles(self) -> list[dict[str, Any]]:
        """The annotations' RLE dicts as json.load gives them (counts are str)."""
        return [a["segmentation"] for a in self.record()["annotations"]]


def member_key(name: str) -> tuple[int, str] | None:
    """(image id, "jpg" | "json") for a sample member name, else None."""
    stem, _, ext = name.rsplit("/", 1)[-1].partition(".")
    if stem.startswith("sa_") and stem[3:].isdigit() and ext in ("jpg", "json"):
        return int(stem[3:]), ext
    return None


def read_source(
    tars: Sequence[Path], ids: Collection[int] | None = None
) -> dict[int, SourceSample]:
    """The images of the shards (only ``ids`` if given) by image id, paired by basename (members
    may be in any order). Headers are read with seeks, so skipped members cost no reading."""
    found: dict[int, dict[str, bytes]] = {}
    for tar_path in tars:
        with tarfile.open(tar_path, "r:*") as tar:
            for info in tar:
                key = member_key(info.name) if info.isfile() else None
                if key is not None and (ids is None or key[0] in ids):
                    reader = tar.extractfile(info)
                    assert reader is not None
                    found.setdefault(key[0], {})[key[1]] = reader.read()
    return {k: SourceSample(k, v["jpg"], v["json"]) for k, v in found.items() if len(v) == 2}


def extract(source: dict[int, SourceSample], folder: Path) -> dict[int, tuple[Path, Path]]:
    """Write each sample's members as files, as a user who untars a shard has them."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for image_id, sample in source.items():
        jpg, js = folder / f"sa_{image_id}.jpg", folder / f"sa_{image_id}.json"
        jpg.write_bytes(sample.jpeg)
        js.write_bytes(sample.json)
        files[image_id] = (jpg, js)
    return files


def key_ordered_shard(samples: Sequence[SourceSample], path: Path) -> Path:
    """A tar of ``samples`` with each image's .jpg and .json adjacent, in id order: what
    WebDataset needs (it groups consecutive members by key), and SA-1B does not promise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for s in sorted(samples, key=lambda s: s.image_id):
            for ext, data in (("jpg", s.jpeg), ("json", s.json)):
                info = tarfile.TarInfo(f"sa_{s.image_id}.{ext}")
                info.size, info.mtime, info.mode = len(data), 1680307200, 0o644
                tar.addfile(info, io.BytesIO(data))
    return path


# ---------------------------------------------------------------------------------------------
# The usual full-resolution reader (bench_store.py, demo_readback.py)


def baseline_read(jpg: Path, js: Path, out: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The usual reader: PIL + json.load + pycocotools, masks copied to (N, H, W) if ``out``."""
    with Image.open(jpg) as im:
        image = np.asarray(im.convert("RGB"))
    with open(js, "rb") as f:
        record = json.load(f)
    rles = [a["segmentation"] for a in record["annotations"]]
    h, w = record["image"]["height"], record["image"]["width"]
    # pycocotools returns a garbage shape for an empty list, so an image without masks is special.
    masks = mask_util.decode(rles) if rles else np.zeros((h, w, 0), np.uint8)
    if out is None:
        return image, masks
    np.copyto(out, masks.transpose(2, 0, 1))
    return image, out


def coco_to_nhw(rles: list[dict[str, Any]], out: np.ndarray) -> np.ndarray:
    """pycocotools decode, then the (N, H, W) C-contiguous copy our reader gives directly."""
    np.copyto(out, mask_util.decode(rles).transpose(2, 0, 1))
    return out


def coco_pil(rles: Sequence[dict[str, Any]], out: np.ndarray, shape: tuple[int, int]) -> None:
    """Masks at another size, the usual way: per mask, pycocotools decode then PIL nearest
    resize into out[k, :h, :w] (per mask is faster here than one (H, W, k) decode + slices)."""
    h, w = shape
    for k, rle in enumerate(rles):
        small = Image.fromarray(mask_util.decode(rle)).resize((w, h), Image.Resampling.NEAREST)
        np.copyto(out[k, :h, :w], np.asarray(small))


def coco_pil_padded(rles: Sequence[dict[str, Any]], out: np.ndarray, hw: tuple[int, int]) -> None:
    """SAM's ResizeLongestSide(L) by PIL nearest, then zero padding to (L, L)."""
    h, w = sam_shape(*hw, out.shape[1])
    coco_pil(rles, out, (h, w))
    out[:, h:, :] = 0
    out[:, :h, w:] = 0


# ---------------------------------------------------------------------------------------------
# The seed's training recipe (peers.py)


def sam_shape(height: int, width: int, longest: int) -> tuple[int, int]:
    """segment_anything's ResizeLongestSide.get_preprocess_shape, as users copy it."""
    scale = longest * 1.0 / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def open_image(jpeg: bytes | Path) -> Image.Image:
    """PIL decode of a JPEG file or bytes, to RGB."""
    with Image.open(io.BytesIO(jpeg) if isinstance(jpeg, bytes) else jpeg) as im:
        return im.convert("RGB")


def seed_sample(
    image: Image.Image,
    record: dict[str, Any],
    key: int,
    recipe: Any,
    epoch: int = 0,
    parts: dict[str, list[float]] | None = None,
) -> dict[str, np.ndarray]:
    """The recipe as the seed did it: decode every mask, filter, draw, PIL resizes.

    ``key`` seeds the draw as sa1b_pack does ((seed, epoch, store index)), so both pick the same
    masks; ``recipe`` is sa1b_pack's Recipe. Seconds per step are appended to ``parts``.
    """
    r = recipe
    t1 = time.perf_counter()
    anns = record["annotations"]
    height, width = record["image"]["height"], record["image"]["width"]
    masks = mask_util.decode([a["segmentation"] for a in anns])  # (H, W, N), all of them
    t2 = time.perf_counter()
    keep = np.array(
        [
            j
            for j, a in enumerate(anns)
            if a["predicted_iou"] >= r.min_predicted_iou
            and a["stability_score"] >= r.min_stability_score
            and a["area"] >= r.min_area
        ],
        dtype=np.int64,
    )
    rng = np.random.default_rng((r.seed, epoch, key))
    if len(keep) > r.max_masks:
        chosen = rng.choice(keep, size=r.max_masks, replace=False)
    else:
        chosen = rng.permutation(keep)
    h, w = sam_shape(height, width, r.image_size)
    padded = np.zeros((r.image_size, r.image_size, 3), np.uint8)
    padded[:h, :w] = np.asarray(image.resize((w, h), Image.Resampling.BILINEAR))
    t3 = time.perf_counter()
    mh, mw = sam_shape(height, width, r.mask_size)
    low = np.zeros((len(chosen), r.mask_size, r.mask_size), bool)
    for k, j in enumerate(chosen):
        small = Image.fromarray(masks[:, :, j]).resize((mw, mh), Image.Resampling.NEAREST)
        low[k, :mh, :mw] = np.asarray(small)
    t4 = time.perf_counter()
    sx, sy = w / width, h / height
    xywh = np.array([anns[j]["bbox"] for j in chosen], np.float64).reshape(-1, 4)
    boxes = np.stack(
        [xywh[:, 0] * sx, xywh[:, 1] * sy, (xywh[:, 0] + xywh[:, 2]) * sx,
         (xywh[:, 1] + xywh[:, 3]) * sy], axis=1,
    )  # fmt: skip
    points = np.array([anns[j]["point_coords"][0] for j in chosen]).reshape(-1, 2) * [sx, sy]
    if parts is not None:
        steps = {
            "pycocotools decode of all masks": t2 - t1,
            "filter, draw, PIL image resize + pad": t3 - t2,
            "PIL mask resizes": t4 - t3,
        }
        for name, dt in steps.items():
            parts.setdefault(name, []).append(dt)
    return {
        "image": padded,
        "masks": low,
        "boxes": boxes.astype(np.float32),
        "points": points.astype(np.float32),
        "mask_ids": np.array([anns[j]["id"] for j in chosen], np.int64),
    }

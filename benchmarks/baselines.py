"""What users run instead of sa1b_pack: pycocotools + PIL, the seed's recipe, and the peers'
ways of getting a sample's JPEG + JSON bytes (extracted files, naive tar, WebDataset).

Every peer feeds the same ``seed_sample``, so peers differ only in how bytes reach it. With 0
workers each dataset records seconds per step in ``parts``. torch and webdataset are imported
only where used. LitData is not a peer here: it pulls torchvision, whose CUDA wheel fails
beside the CPU torch, so it could never be measured on this project's machines.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_util

Parts = dict[str, list[float]]


def read_source(tars: list[Path], ids: set[int] | None = None) -> dict[int, dict[str, bytes]]:
    """image id -> {"jpg": bytes, "json": bytes} from the tars (only ``ids`` if given)."""
    found: dict[int, dict[str, bytes]] = {}
    for path in tars:
        with tarfile.open(path) as tar:
            for info in tar:
                stem, _, ext = Path(info.name).name.partition(".")
                if stem.startswith("sa_") and ext in ("jpg", "json"):
                    if ids is None or int(stem[3:]) in ids:
                        data = tar.extractfile(info).read()  # type: ignore[union-attr]
                        found.setdefault(int(stem[3:]), {})[ext] = data
    return found


def extract(source: dict[int, dict[str, bytes]], folder: Path) -> dict[int, tuple[Path, Path]]:
    """Each sample's members as files, as a user who untars a shard has them."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for i, members in source.items():
        out[i] = (folder / f"sa_{i}.jpg", folder / f"sa_{i}.json")
        out[i][0].write_bytes(members["jpg"])
        out[i][1].write_bytes(members["json"])
    return out


def key_ordered_tar(source: dict[int, dict[str, bytes]], path: Path) -> Path:
    """A tar with each image's .jpg and .json adjacent: what WebDataset needs and SA-1B does
    not promise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for i in sorted(source):
            for ext in ("jpg", "json"):
                info = tarfile.TarInfo(f"sa_{i}.{ext}")
                info.size = len(source[i][ext])
                tar.addfile(info, io.BytesIO(source[i][ext]))
    return path


def sam_shape(height: int, width: int, longest: int) -> tuple[int, int]:
    """segment_anything's ResizeLongestSide.get_preprocess_shape, as users copy it."""
    scale = longest / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def pil_resized(masks: Iterable[np.ndarray], out: np.ndarray, hw=None) -> None:
    """Per mask, PIL nearest resize into out[k]: to out's (S, S) if ``hw`` is None, else to
    SAM's ResizeLongestSide(L) of an (H, W) image, zero padded to (L, L)."""
    h, w = out.shape[1:] if hw is None else sam_shape(*hw, out.shape[1])
    out[:, h:, :] = 0
    out[:, :h, w:] = 0
    for k, m in enumerate(masks):
        out[k, :h, :w] = np.asarray(Image.fromarray(m).resize((w, h), Image.Resampling.NEAREST))


def baseline_read(jpg: Path, js: Path, out: np.ndarray) -> None:
    """The usual full-resolution reader: PIL + json.load + pycocotools, masks to (N, H, W)."""
    with Image.open(jpg) as im:
        np.asarray(im.convert("RGB"))
    with open(js, "rb") as f:
        rles = [a["segmentation"] for a in json.load(f)["annotations"]]
    np.copyto(out, mask_util.decode(rles).transpose(2, 0, 1))


def seed_sample(jpeg: bytes | Path, js: bytes, key: int, r: Any, parts: Parts) -> dict:
    """The recipe as the seed did it: PIL decode, decode every mask, filter, draw (seeded as
    sa1b_pack's (seed, epoch 0, store index), so both pick the same masks), PIL resizes."""
    t0 = time.perf_counter()
    with Image.open(io.BytesIO(jpeg) if isinstance(jpeg, bytes) else jpeg) as im:
        image = im.convert("RGB")
    record = json.loads(js)
    anns, (height, width) = record["annotations"], (record["image"]["height"],
                                                    record["image"]["width"])  # fmt: skip
    t1 = time.perf_counter()
    masks = mask_util.decode([a["segmentation"] for a in anns])  # (H, W, N): all of them
    t2 = time.perf_counter()
    keep = np.array([j for j, a in enumerate(anns) if a["predicted_iou"] >= r.min_predicted_iou
                     and a["stability_score"] >= r.min_stability_score
                     and a["area"] >= r.min_area], np.int64)  # fmt: skip
    rng = np.random.default_rng((r.seed, 0, key))
    chosen = (rng.choice(keep, r.max_masks, replace=False) if len(keep) > r.max_masks
              else rng.permutation(keep))  # fmt: skip
    h, w = sam_shape(height, width, r.image_size)
    padded = np.zeros((r.image_size, r.image_size, 3), np.uint8)
    padded[:h, :w] = np.asarray(image.resize((w, h), Image.Resampling.BILINEAR))
    low = np.zeros((len(chosen), r.mask_size, r.mask_size), bool)
    pil_resized((masks[:, :, j] for j in chosen), low, (height, width))
    t3 = time.perf_counter()
    for name, dt in (("PIL decode + json", t1 - t0), ("pycocotools decode of all masks", t2 - t1),
                     ("draw + PIL resizes", t3 - t2)):  # fmt: skip
        parts.setdefault(name, []).append(dt)
    sx, sy = w / width, h / height
    xywh = np.array([anns[j]["bbox"] for j in chosen], np.float64).reshape(-1, 4)
    boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1) * [sx, sy, sx, sy]
    points = np.array([anns[j]["point_coords"][0] for j in chosen]).reshape(-1, 2) * [sx, sy]
    import torch

    return {"image": torch.from_numpy(padded).permute(2, 0, 1), "masks": torch.from_numpy(low),
            "boxes": torch.from_numpy(boxes.astype(np.float32)),
            "points": torch.from_numpy(points.astype(np.float32)),
            "mask_ids": torch.tensor([anns[j]["id"] for j in chosen], dtype=torch.int64),
            "image_id": record["image"]["image_id"]}  # fmt: skip


def collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack images; zero-pad masks, boxes, points, ids to the batch's largest K."""
    import torch

    k, n = max(len(s["masks"]) for s in batch), len(batch)
    out = {"masks": torch.zeros((n, k, *batch[0]["masks"].shape[1:]), dtype=torch.bool),
           "boxes": torch.zeros((n, k, 4)), "points": torch.zeros((n, k, 2)),
           "mask_ids": torch.zeros((n, k), dtype=torch.int64),
           "mask_valid": torch.zeros((n, k), dtype=torch.bool)}  # fmt: skip
    for b, s in enumerate(batch):
        for f in ("masks", "boxes", "points", "mask_ids"):
            out[f][b, : len(s["masks"])] = s[f]
        out["mask_valid"][b, : len(s["masks"])] = True
    out["image"] = torch.stack([s["image"] for s in batch])
    out["image_id"] = torch.tensor([s["image_id"] for s in batch])
    return out


class SeedFiles:
    """The seed-style reader over extracted ``sa_N.jpg`` / ``sa_N.json`` files."""

    def __init__(self, files: list[tuple[Path, Path]], keys: list[int], recipe: Any):
        self.files, self.keys, self.recipe, self.parts = files, keys, recipe, {}

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict:
        jpg, js = self.files[i]
        return seed_sample(jpg, js.read_bytes(), self.keys[i], self.recipe, self.parts)


class NaiveTar(SeedFiles):
    """The seed's naive tar mode: ``getmember`` (a linear search of every header) +
    ``extractfile`` per item; a handle per process (forked handles would share offsets)."""

    def __init__(self, items: list[tuple[Path, str]], keys: list[int], recipe: Any):
        super().__init__(items, keys, recipe)  # type: ignore[arg-type]
        self._tars: dict[Any, tarfile.TarFile] = {}

    def __getitem__(self, i: int) -> dict:
        path, stem = self.files[i]
        tar = self._tars.get((os.getpid(), path)) or tarfile.open(path)
        self._tars[os.getpid(), path] = tar
        jpg, js = (tar.extractfile(tar.getmember(f"{stem}.{e}")).read()  # type: ignore
                   for e in ("jpg", "json"))  # fmt: skip
        return seed_sample(jpg, js, self.keys[i], self.recipe, self.parts)


class WdsStage(SeedFiles):
    """WebDataset ``.map`` stage: {"__key__", "jpg", "json"} -> the seed's sample."""

    def __init__(self, key_of: dict[str, int], recipe: Any):
        super().__init__([], [], recipe)
        self.key_of = key_of

    def __call__(self, s: dict[str, Any]) -> dict:
        return seed_sample(s["jpg"], s["json"], self.key_of[s["__key__"]], self.recipe, self.parts)


def webdataset(urls: list[Path], stage: WdsStage) -> Any:
    import webdataset as wds

    return wds.WebDataset([str(u) for u in urls], shardshuffle=False).map(stage)

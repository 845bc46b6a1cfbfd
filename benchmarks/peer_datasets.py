"""The peers of peers.py as a user writes them: four ways to get a sample's JPEG + JSON bytes,
each feeding the seed's recipe (baselines.seed_sample), as PyTorch datasets.

1. ``SeedFiles``: extracted files, PIL, json (the seed-style reader).
2. ``NaiveTar``: a ``tarfile.open`` handle per process, ``getmember`` + ``extractfile`` per item.
3. ``webdataset_pipeline``: WebDataset streaming the tars in order (no random access).
4. ``litdata_dataset``: a LitData StreamingDataset of the same bytes (``optimize``d first).

With 0 workers each records seconds per step in ``parts`` (workers keep their own copies).
WebDataset and LitData are optional: importing this module never requires them.
"""

from __future__ import annotations

import json
import os
import tarfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from baselines import open_image, seed_sample
from torch.utils.data import Dataset

Parts = dict[str, list[float]]


def tensors(sample: dict[str, np.ndarray], image_id: int) -> dict[str, Any]:
    out: dict[str, Any] = {k: torch.from_numpy(v) for k, v in sample.items()}
    out["image"] = out["image"].permute(2, 0, 1)
    out["image_id"] = image_id
    return out


def recipe_sample(
    jpeg: bytes | Path, record: dict, key: int, recipe: Any, parts: Parts, t0: float
) -> dict[str, Any]:
    """Decode with PIL, then the seed's recipe; the read step is timed from ``t0``."""
    t1 = time.perf_counter()
    image = open_image(jpeg)
    parts.setdefault("read bytes", []).append(t1 - t0)
    parts.setdefault("PIL decode", []).append(time.perf_counter() - t1)
    return tensors(seed_sample(image, record, key, recipe, 0, parts), record["image"]["image_id"])


def collate(batch: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack images, zero-pad masks/boxes/points to the batch's largest K, plus a valid mask."""
    k = max(len(s["masks"]) for s in batch)
    size = batch[0]["masks"].shape[1:]
    out = {
        "masks": torch.zeros((len(batch), k, *size), dtype=torch.bool),
        "boxes": torch.zeros((len(batch), k, 4)),
        "points": torch.zeros((len(batch), k, 2)),
        "mask_ids": torch.zeros((len(batch), k), dtype=torch.int64),
        "mask_valid": torch.zeros((len(batch), k), dtype=torch.bool),
    }
    for b, s in enumerate(batch):
        n = len(s["masks"])
        for f in ("masks", "boxes", "points", "mask_ids"):
            out[f][b, :n] = s[f]
        out["mask_valid"][b, :n] = True
    out["image"] = torch.stack([s["image"] for s in batch])
    out["image_id"] = torch.tensor([s["image_id"] for s in batch], dtype=torch.int64)
    return out


class SeedFiles(Dataset):
    """The seed-style reader: extracted ``sa_N.jpg`` / ``sa_N.json`` files."""

    def __init__(self, files: Sequence[tuple[Path, Path]], keys: Sequence[int], recipe: Any):
        self.files, self.keys, self.recipe = list(files), list(keys), recipe
        self.parts: Parts = {}

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict[str, Any]:
        jpg, js = self.files[i]
        t0 = time.perf_counter()
        with open(js, "rb") as f:
            record = json.load(f)
        return recipe_sample(jpg, record, self.keys[i], self.recipe, self.parts, t0)


class NaiveTar(Dataset):
    """The seed's naive tar mode: ``getmember(name)`` + ``extractfile`` per item.

    ``getmember`` loads every header on first use and then searches the member list linearly,
    so both the first call and each lookup grow with the shard. Handles are opened per process
    (a handle inherited through fork would share its file offset with the parent's).
    """

    def __init__(self, items: Sequence[tuple[Path, str]], keys: Sequence[int], recipe: Any):
        self.items, self.keys, self.recipe = list(items), list(keys), recipe
        self.parts: Parts = {}
        self._tars: dict[Path, tarfile.TarFile] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self.items)

    def _open(self, path: Path) -> tarfile.TarFile:
        if self._pid != os.getpid():
            self._tars, self._pid = {}, os.getpid()
        if path not in self._tars:
            self._tars[path] = tarfile.open(path, "r:")
        return self._tars[path]

    def __getitem__(self, i: int) -> dict[str, Any]:
        path, stem = self.items[i]
        t0 = time.perf_counter()
        tar = self._open(path)
        data = {}
        for ext in ("jpg", "json"):
            reader = tar.extractfile(tar.getmember(f"{stem}.{ext}"))
            assert reader is not None
            data[ext] = reader.read()
        self.parts.setdefault("getmember + extractfile + read", []).append(time.perf_counter() - t0)
        record = json.loads(data["json"])
        return recipe_sample(data["jpg"], record, self.keys[i], self.recipe, self.parts, t0)


class WdsRecipe:
    """WebDataset ``.map`` stage: {"__key__", "jpg", "json"} -> the recipe's sample."""

    def __init__(self, key_of: dict[str, int], recipe: Any):
        self.key_of, self.recipe = key_of, recipe
        self.parts: Parts = {}

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        t0 = time.perf_counter()
        record = json.loads(sample["json"])
        key = self.key_of[sample["__key__"]]
        return recipe_sample(sample["jpg"], record, key, self.recipe, self.parts, t0)


def webdataset_pipeline(urls: Sequence[Path], stage: WdsRecipe) -> Any:
    """``wds.WebDataset`` over the shards in order (split by worker), mapped by ``stage``."""
    import webdataset as wds

    return wds.WebDataset([str(u) for u in urls], shardshuffle=False).map(stage)


def litdata_write(items: Sequence[tuple[int, Path, Path]], folder: Path) -> None:
    """``litdata.optimize`` the (key, jpg file, json file) items into chunks of raw bytes."""
    from litdata import optimize

    optimize(fn=_litdata_item, inputs=list(items), output_dir=str(folder), chunk_bytes="64MB",
             num_workers=1, mode="overwrite", verbose=False)  # fmt: skip


def _litdata_item(item: tuple[int, Path, Path]) -> dict[str, Any]:
    key, jpg, js = item
    return {"key": int(key), "jpg": Path(jpg).read_bytes(), "json": Path(js).read_bytes()}


def litdata_dataset(folder: Path, recipe: Any, seed: int) -> Any:
    """A LitData StreamingDataset over the optimized bytes, shuffled, mapped by the recipe."""
    from litdata import StreamingDataset

    class LitRecipe(StreamingDataset):
        def __getitem__(self, index: Any) -> dict[str, Any]:
            t0 = time.perf_counter()
            item = super().__getitem__(index)
            record = json.loads(item["json"])
            return recipe_sample(item["jpg"], record, item["key"], recipe, self.parts, t0)

    ds = LitRecipe(str(folder), shuffle=True, seed=seed)
    ds.parts = {}
    return ds

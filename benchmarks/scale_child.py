"""One fresh process of the scale question: imports, opens a store, reads it, reports JSON.

python benchmarks/scale_child.py STORE --order uniform|blocks
python benchmarks/scale_child.py STORE --part-only
"""

from __future__ import annotations

import argparse
import json
import os
import time

T0 = time.perf_counter()
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from sa1b_pack import open_store  # noqa: E402
from sa1b_pack.store.order import epoch_order  # noqa: E402
from sa1b_pack.torch import SA1BDataset  # noqa: E402
from sa1b_pack.train.recipe import Recipe, eligible_images  # noqa: E402

IMPORT_S = time.perf_counter() - T0


def resources() -> dict[str, float]:
    """This process's open descriptors, maps of store parts, and resident memory."""
    maps = sum(1 for line in open("/proc/self/maps") if "/parts/" in line)
    rss = next(int(line.split()[1]) for line in open("/proc/self/status")
               if line.startswith("VmRSS"))  # fmt: skip
    return {"fds": len(os.listdir("/proc/self/fd")), "maps": maps, "rss_mb": rss / 1024}


class Measured(SA1BDataset):
    def __getitem__(self, i: int) -> dict:
        sample = super().__getitem__(i)
        return {"image_id": sample["image_id"], **resources()}


def part_only(root: str) -> dict:
    store = open_store(root)
    touches = []
    for _ in range(5):
        fresh = open_store(root)
        t = time.perf_counter()
        fresh.part(0)
        touches.append(time.perf_counter() - t)
    masks = store.info()["masks"]
    t = time.perf_counter()
    eligible_images(store, Recipe(min_predicted_iou=0.88, min_stability_score=0.95, min_area=100))
    index_s = time.perf_counter() - t
    return {"touch_ms": 1e3 * float(np.median(touches)), "images": len(store), "masks": masks,
            "index_ms_per_m": 1e3 * index_s / masks * 1e6}  # fmt: skip


def read(root: str, order: str) -> dict:
    t = time.perf_counter()
    store = open_store(root)
    len(store), store[0].image_id
    out = {"import_s": IMPORT_S, "start_s": time.perf_counter() - t, "samples": len(store)}
    touches = []
    count = min(50, len(store.shards) - 1)
    for p in np.random.default_rng(0).choice(np.arange(1, len(store.shards)), count, replace=False):
        t = time.perf_counter()
        store.part(int(p))
        touches.append(time.perf_counter() - t)
    out["touch_ms"] = 1e3 * float(np.median(touches))
    store = open_store(root)  # the only reader in the process from here: nothing open yet
    t = time.perf_counter()
    for i in store.epoch_order(seed=0, epoch=0, order=order).tolist():
        s = store[i]
        _ = (s.image_id, s.bbox, s.area, s.predicted_iou)
        if len(s):
            s.masks([0], size=(8, 8))
    out["pass_rate"] = len(store) / (time.perf_counter() - t)
    out.update(resources())
    del store
    t = time.perf_counter()
    ds = Measured(root, image_size=32, mask_size=8, max_masks=4)
    out.update(dataset_s=time.perf_counter() - t, dataset_images=len(ds))
    sizes = np.bincount(ds.store.parts_of(ds.index), minlength=len(ds.store.shards))
    sampler = epoch_order(sizes, seed=0, epoch=0, order=order).tolist()
    loader = DataLoader(ds, batch_size=8, num_workers=2, sampler=sampler, persistent_workers=True,
                        collate_fn=lambda batch: batch)  # fmt: skip
    for _ in loader:  # untimed: workers start
        pass
    t = time.perf_counter()
    seen = [s for batch in loader for s in batch]
    out["loader_rate"] = len(seen) / (time.perf_counter() - t)
    for key in ("fds", "maps", "rss_mb"):
        out[f"worker_{key}"] = max(s[key] for s in seen)
    return out


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("store")
    p.add_argument("--order", default="uniform")
    p.add_argument("--part-only", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(1)
    result = part_only(args.store) if args.part_only else read(args.store, args.order)
    print(json.dumps(result))

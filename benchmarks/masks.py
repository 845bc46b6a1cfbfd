"""Mask decoding: ours (serial, parallel) vs pycocotools and memset; sampled and resized masks
vs pycocotools + PIL; mask_iou vs pycocotools.mask.iou."""

from __future__ import annotations

import harness as h
import numba
import numpy as np
from baselines import pil_resized
from harness import Ctx, Result, question
from pycocotools import mask as mask_util

from sa1b_pack import open_store


def workloads(s, buf: np.ndarray, pick: np.ndarray, size: int, longest: int) -> dict[str, dict]:
    """Per workload, the cases timed side by side on one sample (outputs in a reused buffer)."""
    n, hgt, wid = len(s), s.height, s.width
    rles = [s.rle(j) for j in range(n)]
    picked = [rles[j] for j in pick]
    full, small = h.flat_view(buf, (n, hgt, wid)), h.flat_view(buf, (len(pick), size, size))
    padded = h.flat_view(buf, (len(pick), longest, longest))
    return {
        "full": {
            "ours": lambda: s.masks(out=full),
            "ours parallel": lambda: s.masks(out=full, parallel=True),
            "pycocotools": lambda: np.copyto(full, mask_util.decode(rles).transpose(2, 0, 1)),
            "fill(1)": lambda: full.fill(1),
        },
        "size": {
            "ours": lambda: s.masks(pick, size=(size, size), out=small),
            "pycocotools": lambda: pil_resized(map(mask_util.decode, picked), small),
        },
        "longest": {
            "ours": lambda: s.masks(pick, longest=longest, pad=True, out=padded),
            "pycocotools": lambda: pil_resized(map(mask_util.decode, picked), padded, (hgt, wid)),
        },
        "iou": {"ours": s.mask_iou, "pycocotools": lambda: mask_util.iou(rles, rles, [0] * n)},
    }


@question("masks", "What does mask decoding cost against pycocotools and against memset, full "
          "size, sampled and resized, and for pairwise IoU?")  # fmt: skip
def masks(ctx: Ctx) -> Result:
    store = open_store(ctx.store)
    k, size, longest = ctx.size(64, 8), ctx.size(256, 32), ctx.size(1024, 64)
    rounds = ctx.size(4, 2)
    indices = h.with_masks(store, ctx.size(4, 3), ctx.seed)
    buf = h.mask_buffer(store, indices, k, least=k * longest * longest)
    rng = np.random.default_rng(ctx.seed)
    total: dict[tuple[str, str], np.ndarray] = {}
    n_masks = n_bytes = 0
    for n, i in enumerate(indices):
        s = store[i]
        pick = rng.choice(len(s), k, replace=len(s) < k)
        for work, cases in workloads(s, buf, pick, size, longest).items():
            for case, t in h.side_by_side(cases, rounds, warmup=int(n == 0)).items():
                total[work, case] = total.get((work, case), 0) + np.array(t)
        n_masks, n_bytes = n_masks + len(s), n_bytes + len(s) * s.height * s.width
        coco = mask_util.decode([s.rle(j) for j in range(len(s))]).transpose(2, 0, 1)
        if not np.array_equal(s.masks(), coco):  # untimed: every sample timed is checked
            raise SystemExit(f"store[{i}] (image {s.image_id}): masks differ from pycocotools")
    full = {c: t for (w, c), t in total.items() if w == "full"}
    rate = {c: [n_masks / v for v in t] for c, t in full.items()}
    gbs = {c: [n_bytes / 1e9 / v for v in t] for c, t in full.items()}
    rows = [
        h.row("full size, ours masks(out=)", rate["ours"], "masks/s",
              f"{h.x(h.ratio(rate['ours'], rate['pycocotools']))} pycocotools",
              "string parsing included"),
        h.row("full size, ours parallel=True", rate["ours parallel"], "masks/s",
              f"{h.x(h.ratio(rate['ours parallel'], rate['ours']))} serial",
              f"{numba.get_num_threads()} numba threads"),
        h.row("full size, pycocotools -> (N,H,W)", rate["pycocotools"], "masks/s", "ref",
              "decode (H,W,N), then copy of the transpose into the same buffer"),
        h.row("full size, ours, output written", gbs["ours"], "GB/s",
              f"{100 * h.ratio(gbs['ours'], gbs['fill(1)']):.0f}% of memset",
              "the (N,H,W) uint8 masks, serial"),
        h.row("memset fill(1), same bytes", gbs["fill(1)"], "GB/s", "ref",
              "the output-write ceiling"),
        h.row("masks bit-exact with pycocotools", [n_masks], "masks", "", "every mask of the "
              "samples timed, full size, compared untimed (the run stops at the first that "
              "differs)"),
    ]  # fmt: skip
    per = len(indices) / 1e3  # seconds summed over samples -> ms per sample
    labels = {"size": f"{k} sampled masks, size=({size},{size})",
              "longest": f"{k} sampled masks, longest={longest}, pad=True",
              "iou": "mask_iou(), all masks"}  # fmt: skip
    refs = {"size": "pycocotools + PIL nearest, per mask", "longest": "the same + zero pad",
            "iou": "pycocotools.mask.iou(rles, rles)"}  # fmt: skip
    for work, label in labels.items():
        ours, ref = total[work, "ours"], total[work, "pycocotools"]
        what = "out= reused" if work != "iou" else "merge of foreground intervals per pair"
        rows += [
            h.row(f"{label}, ours", list(ours / per), "ms/sample",
                  f"{h.x(h.ratio(ref, ours))} ref", what),
            h.row(f"{label}, ref", list(ref / per), "ms/sample", "ref", refs[work]),
        ]  # fmt: skip
    notes = [f"{len(indices)} samples, {n_masks} masks; per workload and sample, all cases "
             f"interleaved for {rounds} rounds; values are round totals over the samples; page "
             "cache warm; outputs into one reused buffer faulted in up front."]  # fmt: skip
    return Result(rows, notes)

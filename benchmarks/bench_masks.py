"""What does mask decoding cost, and is the storage choice (COCO strings in counts.bin) right?

On the run's packed store (synthetic full-size shards by default: 1500 px short side, ~100
masks per image), side by side per sample: full-size decode of all masks (serial and parallel
kernel) against pycocotools and a memset of the same bytes; k random masks resized to (S, S)
and to SAM's ResizeLongestSide(L) + pad against pycocotools + PIL; pairwise IoU against
pycocotools; and, for the storage choice, bytes of strings vs uint32 runs (raw, zstd) and the
time that parsing the strings adds to each of those workloads. Outputs reuse one buffer;
results are checked.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numba
import numpy as np
from baselines import coco_pil, coco_pil_padded, coco_to_nhw
from common import (
    add_input_args,
    args_dict,
    environment,
    flat_view,
    input_description,
    measure_side_by_side,
    p50,
    packed_store,
    print_header,
    print_table,
    source_tars,
    spread,
    summary_row,
    work_dir,
    write_results,
)
from pycocotools import mask as mask_util

from sa1b_pack import Sample, Store, open_store
from sa1b_pack.codec import rle as mask_codec

try:
    from numcodecs import Zstd
except ImportError:  # numcodecs comes with zarr (the bench extra); without it, no zstd rows
    Zstd = None

HEADERS = ("measure", "p50", "unit", "ratio", "notes")
KB = 1e3
Cases = dict[str, Callable[[], Any]]


@dataclass
class Item:
    """One sample with masks, and what each side needs prepared outside the timing."""

    sample: Sample
    rles: list[dict[str, Any]]  # {"size", "counts": str}: the source strings (rle(j))
    data: np.ndarray  # the part's counts.bin map
    offsets: np.ndarray  # this sample's strings in data (counts_offset, counts_size)
    sizes: np.ndarray
    pick: np.ndarray  # k random mask indices (fixed seed)
    runs: tuple[np.ndarray, ...]  # pre-parsed (runs, run_offsets, run_counts), all masks
    pick_runs: tuple[np.ndarray, ...]  # the same for the picked masks

    @property
    def hw(self) -> tuple[int, int]:
        return self.sample.height, self.sample.width

    def parse(self, pick: bool = False) -> tuple[np.ndarray, ...]:
        sel = self.pick if pick else slice(None)
        return mask_codec.parse_strings(self.data, self.offsets[sel], self.sizes[sel], *self.hw)


def prepare(store: Store, count: int, k: int, seed: int) -> list[Item]:
    """``count`` samples with masks (seeded draw), each with its k random masks."""
    with_masks = [i for i in range(len(store)) if len(store[i]) > 0]
    rng = np.random.default_rng(seed)
    items = []
    for i in (with_masks[j] for j in spread(len(with_masks), count, seed)):
        s = store[i]
        part = store.part(store.shards.index(s.shard))
        lo, n = int(part.mask_start[s.local]), len(s)
        offsets, sizes = part.counts_offset[lo : lo + n], part.counts_size[lo : lo + n]
        pick = rng.choice(n, size=k, replace=n < k)
        rles = [s.rle(j) for j in range(n)]
        hw = (s.height, s.width)
        runs = mask_codec.parse_strings(part.counts, offsets, sizes, *hw)
        pick_runs = mask_codec.parse_strings(part.counts, offsets[pick], sizes[pick], *hw)
        items.append(Item(s, rles, part.counts, offsets, sizes, pick, runs, pick_runs))
    return items


# ---------------------------------------------------------------------------------------------
# Workloads: per sample, groups of cases. A group is timed side by side (interleaved round by
# round); groups run one after the other for the same sample. Heavy cases get their own group:
# pycocotools allocates and frees hundreds of MB per call, and on this VM freed pages go back to
# the host, which slowed whichever sub-ms case ran next ~2x; 64 full-size masks (~200 MB of
# writes) evict the caches the small cases run from.


def full_cases(it: Item, buffer: np.ndarray) -> list[Cases]:
    s, (h, w) = it.sample, it.hw
    out = flat_view(buffer, (len(s), h, w))
    ours = {
        "ours": lambda: s.masks(out=out),
        "ours_parallel": lambda: mask_codec.decode(*it.parse(), h, w, out=out, parallel=True),
        "from_runs": lambda: mask_codec.decode(*it.runs, h, w, out=out),
        "parse": it.parse,
        "fill0": lambda: out.fill(0),
        "fill1": lambda: out.fill(1),
    }
    return [ours, {"coco": lambda: coco_to_nhw(it.rles, out)}]


def resized_cases(it: Item, buffer: np.ndarray, size: int) -> list[Cases]:
    s, (h, w), k = it.sample, it.hw, len(it.pick)
    out = flat_view(buffer, (k, size, size))
    full = flat_view(buffer, (k, h, w))
    picked = [it.rles[j] for j in it.pick]
    ours = {
        "ours": lambda: s.masks(it.pick, size=(size, size), out=out),
        "from_runs": lambda: mask_codec.decode(*it.pick_runs, h, w, size=(size, size), out=out),
        "parse": lambda: it.parse(pick=True),
    }
    return [
        ours,
        {"ours_full": lambda: s.masks(it.pick, out=full)},
        {"coco": lambda: coco_pil(picked, out, (size, size))},
    ]


def padded_cases(it: Item, buffer: np.ndarray, longest: int) -> list[Cases]:
    s, (h, w), k = it.sample, it.hw, len(it.pick)
    out = flat_view(buffer, (k, longest, longest))
    picked = [it.rles[j] for j in it.pick]
    ours = {
        "ours": lambda: s.masks(it.pick, longest=longest, pad=True, out=out),
        "from_runs": lambda: mask_codec.decode_padded(
            *it.pick_runs, h, w, longest=longest, pad=True, out=out
        ),
        "parse": lambda: it.parse(pick=True),
    }
    return [ours, {"coco": lambda: coco_pil_padded(picked, out, (h, w))}]


def iou_cases(it: Item) -> list[Cases]:
    crowd = [0] * len(it.rles)
    ours = {
        "ours": it.sample.mask_iou,
        "from_runs": lambda: mask_codec.iou(mask_codec.intersections(*it.runs)),
        "parse": it.parse,
    }
    return [ours, {"coco": lambda: mask_util.iou(it.rles, it.rles, crowd)}]


def run_rounds(items: Sequence[Item], make: Callable[[Item], list[Cases]], rounds: int) -> dict:
    """Seconds per round summed over samples, per case. The first sample gets an untimed call
    of every case first (JIT, caches)."""
    totals: dict[str, np.ndarray] = {}
    for n, it in enumerate(items):
        for group in make(it):
            for name, t in measure_side_by_side(group, rounds, warmup=int(n == 0)).items():
                totals[name] = totals.get(name, np.zeros(rounds)) + np.array(t)
    return {name: t.tolist() for name, t in totals.items()}


# ---------------------------------------------------------------------------------------------
# Rows


def full_rows(sec: dict, items: Sequence[Item]) -> list[list[Any]]:
    n_masks = sum(len(it.rles) for it in items)
    n_bytes = sum(len(it.rles) * it.hw[0] * it.hw[1] for it in items)
    rate = {k: n_masks / p50(v) for k, v in sec.items()}
    gbs = {k: n_bytes / 1e9 / p50(v) for k, v in sec.items()}
    ms = {k: 1e3 * p50(v) / len(items) for k, v in sec.items()}
    ours, par, coco = rate["ours"], rate["ours_parallel"], rate["coco"]
    threads = numba.get_num_threads()

    def share(fill: str) -> str:
        serial, parallel = (100 * gbs[k] / gbs[fill] for k in ("ours", "ours_parallel"))
        return f"serial {serial:.0f}%, parallel {parallel:.0f}%"

    return [
        ["ours masks(out=), serial kernel", ours, "masks/s", f"{_x(ours / coco)} pycocotools",
         f"{gbs['ours']:.1f} GB/s, {ms['ours']:.1f} ms/sample, string parsing included"],
        ["ours parse + decode(parallel=True)", par, "masks/s",
         f"{par / ours:.2f}x serial, {_x(par / coco)} pycocotools",
         f"{gbs['ours_parallel']:.1f} GB/s, {ms['ours_parallel']:.1f} ms/sample, "
         f"{threads} numba threads"],
        ["pycocotools decode -> (N,H,W)", coco, "masks/s", "ref",
         f"{gbs['coco']:.2f} GB/s, {ms['coco']:.0f} ms/sample: (H,W,N) into fresh pages, "
         "then np.copyto of the transpose into the reused buffer"],
        ["memset fill(0), same buffer", gbs["fill0"], "GB/s", share("fill0"),
         "1 core; this VM writes zero lines ~2x faster than other bytes"],
        ["memset fill(1), same buffer", gbs["fill1"], "GB/s", share("fill1"),
         "1 core; non-zero bytes (a mask is 0s and 1s): the fair ceiling for one core"],
    ]  # fmt: skip


def _x(ratio: float) -> str:
    return f"{ratio:.0f}x" if ratio >= 100 else f"{ratio:.1f}x"


def _ms(sec: dict, items: Sequence[Item]) -> dict[str, float]:
    return {k: 1e3 * p50(v) / len(items) for k, v in sec.items()}


def resized_rows(
    small: dict, padded: dict, items: Sequence[Item], size: int, longest: int
) -> list[list[Any]]:
    a, b, k = _ms(small, items), _ms(padded, items), len(items[0].pick)
    pixels = np.mean([it.hw[0] * it.hw[1] for it in items]) / size**2
    return [
        [f"ours masks(idx, size=({size},{size}))", a["ours"], "ms/sample",
         f"{_x(a['coco'] / a['ours'])} coco+PIL", f"{k} random masks per sample, out= reused"],
        [f"pycocotools + PIL nearest {size}x{size}", a["coco"], "ms/sample", "ref",
         "per mask: decode (H,W), Image.resize NEAREST, copy into a reused array"],
        [f"ours masks(idx, longest={longest}, pad=True)", b["ours"], "ms/sample",
         f"{_x(b['coco'] / b['ours'])} coco+PIL", f"{k} masks -> ({k},{longest},{longest})"],
        [f"pycocotools + PIL ResizeLongest({longest}) + pad", b["coco"], "ms/sample", "ref",
         "per mask as above, to SAM's ResizeLongestSide shape, then zero padding"],
        [f"ours masks(idx), full size, same {k}", a["ours_full"], "ms/sample",
         f"{a['ours_full'] / a['ours']:.1f}x the {size}x{size} time",
         f"for {pixels:.0f}x the output pixels: parsing and flips do not shrink with the output"],
    ]  # fmt: skip


def iou_rows(sec: dict, items: Sequence[Item], equal: bool) -> list[list[Any]]:
    ms, n = _ms(sec, items), np.mean([len(it.rles) for it in items])
    return [
        ["ours mask_iou()", ms["ours"], "ms/sample", f"{ms['coco'] / ms['ours']:.1f}x pycocotools",
         f"{n:.0f} masks/sample: parse, then merge foreground intervals per pair"],
        ["pycocotools.mask.iou(rles, rles, [0]*n)", ms["coco"], "ms/sample", "ref",
         f"results equal on all {len(items)} samples: {equal}"],
    ]  # fmt: skip


def storage_bytes(items: Sequence[Item]) -> dict[str, int | None]:
    """counts.bin bytes vs the same masks as uint32 runs, raw and zstd-3 per sample."""
    out: dict[str, int | None] = {"strings": 0, "runs": 0, "runs_zstd": None, "strings_zstd": None}
    codec = Zstd(level=3) if Zstd is not None else None
    if codec is not None:
        out["runs_zstd"] = out["strings_zstd"] = 0
    for it in items:
        strings = b"".join(
            it.data[o : o + n].tobytes() for o, n in zip(it.offsets, it.sizes, strict=True)
        )
        runs, run_offsets, run_counts = it.runs
        used = np.concatenate(
            [runs[o : o + c] for o, c in zip(run_offsets, run_counts, strict=True)]
        )
        out["strings"] += len(strings)
        out["runs"] += used.nbytes
        if codec is not None:
            out["runs_zstd"] += len(codec.encode(used))
            out["strings_zstd"] += len(codec.encode(strings))
    return out


def storage_rows(nbytes: dict, workloads: dict[str, dict], items: Sequence[Item]) -> list:
    ref, n_masks = nbytes["strings"], sum(len(it.rles) for it in items)
    rows = [
        ["counts.bin: COCO strings (stored)", ref / KB, "kB", "ref",
         f"{ref / n_masks:.0f} B/mask; parsed on every read"],
        ["uint32 runs (format v1)", nbytes["runs"] / KB, "kB", f"{nbytes['runs'] / ref:.2f}x",
         f"{nbytes['runs'] / n_masks:.0f} B/mask; decoded directly"],
    ]  # fmt: skip
    for key, name in (("runs_zstd", "uint32 runs"), ("strings_zstd", "COCO strings")):
        size = nbytes[key]
        label = f"{name}, zstd-3 per sample"
        if size is None:
            rows.append([label, float("nan"), "kB", "-", "skipped: numcodecs is not installed"])
        else:
            rows.append([label, size / KB, "kB", f"{size / ref:.2f}x", "numcodecs Zstd"])
    for label, sec in workloads.items():
        ms = _ms(sec, items)
        rows.append(
            [f"{label}: from pre-parsed runs", ms["from_runs"], "ms/sample",
             f"{ms['from_runs'] / ms['ours']:.2f}x strings",
             f"from strings {ms['ours']:.3g} ms; parse alone {ms['parse']:.3g} ms = "
             f"{100 * ms['parse'] / ms['ours']:.1f}% of it"]
        )  # fmt: skip
    return rows


# ---------------------------------------------------------------------------------------------
# Checks (untimed, after the timing: freeing big arrays costs this VM CPU for a while)


def check_outputs(items: Sequence[Item], size: int, longest: int) -> dict[str, Any]:
    it = items[0]
    s, (h, w), k = it.sample, it.hw, len(it.pick)
    picked = [it.rles[j] for j in it.pick]
    ours = s.masks()
    checks: dict[str, Any] = {
        "full_equal": bool(np.array_equal(ours, mask_util.decode(it.rles).transpose(2, 0, 1))),
        "parallel_equal": bool(
            np.array_equal(ours, mask_codec.decode(*it.runs, h, w, parallel=True))
        ),
    }
    del ours
    for name, mine, ref in (
        (f"{size}x{size}", s.masks(it.pick, size=(size, size)), np.empty((k, size, size), "u1")),
        (f"longest={longest}", s.masks(it.pick, longest=longest, pad=True),
         np.empty((k, longest, longest), "u1")),
    ):  # fmt: skip
        if name.startswith("longest"):
            coco_pil_padded(picked, ref, (h, w))
        else:
            coco_pil(picked, ref, (size, size))
        diff = np.argwhere(mine != ref)
        checks[f"pil_{name}"] = {
            "pixels_differing": len(diff),
            "pixels": int(ref.size),
            "output_rows": sorted(set(diff[:, 1].tolist()))[:10],
            "output_cols": sorted(set(diff[:, 2].tolist()))[:10],
        }
    for it in items:  # the brief: IoU must equal pycocotools exactly
        coco = mask_util.iou(it.rles, it.rles, [0] * len(it.rles))
        assert np.array_equal(it.sample.mask_iou(), coco), f"IoU differs, {it.sample}"
    checks["iou_equal_all"] = True
    return checks


def time_all(items: Sequence[Item], args: argparse.Namespace) -> dict[str, dict]:
    """Every workload, in one reused output buffer faulted in up front."""
    k, size, longest = args.masks, args.size, args.longest
    need = max(max(len(it.rles), k) * it.hw[0] * it.hw[1] for it in items)
    buffer = np.empty(max(need, k * longest * longest), np.uint8)
    buffer.fill(1)  # fault every page in now, not inside a timed call
    workloads: dict[str, Callable[[Item], list[Cases]]] = {
        "full": lambda it: full_cases(it, buffer),
        "resized": lambda it: resized_cases(it, buffer, size),
        "padded": lambda it: padded_cases(it, buffer, longest),
        "iou": iou_cases,
    }
    sec = {}
    for name, make in workloads.items():
        print(f"{name} ...", flush=True)
        sec[name] = run_rounds(items, make, args.rounds)
    return sec


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_input_args(p)
    p.add_argument("--samples", type=int, default=4, help="samples with masks (seeded draw)")
    p.add_argument("--rounds", type=int, default=4, help="rounds per sample, median reported")
    p.add_argument("--masks", type=int, default=64, help="random masks per sample (k)")
    p.add_argument("--size", type=int, default=256, help="resized output S x S")
    p.add_argument("--longest", type=int, default=1024, help="ResizeLongestSide L, padded")
    args = p.parse_args(argv)
    if args.smoke:
        args.samples, args.rounds, args.masks, args.size, args.longest = 3, 2, 8, 32, 64
    return args


def summary(tables: dict[str, list[list[Any]]], rounds: int) -> list[dict[str, Any]]:
    """The headline rows, in the run's summary schema."""
    out = []
    for rows in list(tables.values())[:3]:
        for measure, value, unit, ratio, note in rows:
            if measure.startswith(("ours", "memset fill(1)")):
                out.append(summary_row(measure, value, unit, n=rounds, ratio=ratio,
                                       dominated=note))  # fmt: skip
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    env = environment()
    env["numba_threads"] = numba.get_num_threads()
    tars = source_tars(args)
    print_header(f"bench_masks: {input_description(args, tars)}", env)
    k, S, L = args.masks, args.size, args.longest
    with work_dir(args.store) as tmp:
        items = prepare(open_store(packed_store(args, tars, Path(tmp))), args.samples, k, args.seed)
        sec = time_all(items, args)
        nbytes = storage_bytes(items)
        checks = check_outputs(items, S, L)
        workloads = {
            "full size, all masks": sec["full"],
            f"{k} masks @{S}x{S}": sec["resized"],
            f"{k} masks @longest {L}, padded": sec["padded"],
            "mask_iou, all masks": sec["iou"],
        }
        tables = {
            "full-size decode, all masks of a sample -> (N, H, W) uint8": full_rows(
                sec["full"], items
            ),
            f"{k} random masks per sample, resized (seed {args.seed})": resized_rows(
                sec["resized"], sec["padded"], items, S, L
            ),
            "pairwise IoU of all masks of a sample": iou_rows(
                sec["iou"], items, checks["iou_equal_all"]
            ),
            "storage: COCO strings (counts.bin) vs uint32 runs": storage_rows(
                nbytes, workloads, items
            ),
        }
        n_masks = sum(len(it.rles) for it in items)
        n_items = len(items)
        del items
    text = []
    for title, rows in tables.items():
        print(f"\n## {title}")
        text.append(f"## {title}\n" + print_table(HEADERS, rows))
    pil = {key: v for key, v in checks.items() if key.startswith("pil_")}
    notes = (
        f"{n_items} samples, {n_masks} masks; per sample = round total / samples, median of "
        f"{args.rounds} rounds; per sample, our cases + memsets interleaved, "
        "pycocotools and 64 full-size masks each in their own rounds; page cache warm.\n"
        f"checks: full == pycocotools {checks['full_equal']}, parallel == serial "
        f"{checks['parallel_equal']}, IoU == pycocotools on every sample "
        f"{checks['iou_equal_all']}; ours vs PIL nearest: "
        + "; ".join(
            f"{name[4:]} {c['pixels_differing']} of {c['pixels']} pixels differ"
            + (f" (output rows {c['output_rows']})" if c["pixels_differing"] else "")
            for name, c in pil.items()
        )
    )
    print("\n" + notes)
    print(f"allocator: {env['allocator']}  numba threads: {env['numba_threads']}")
    result = {
        "environment": env,
        "args": args_dict(args),
        "summary": summary(tables, args.rounds),
        "notes": [notes],
        "tables": {
            title: [dict(zip(HEADERS, r, strict=True)) for r in rows]
            for title, rows in tables.items()
        },
        "bytes": nbytes,
        "checks": checks,
        "raw_round_seconds": sec,
        "table": "\n\n".join(text),
    }
    path = write_results("bench_masks-smoke" if args.smoke else "bench_masks", result, args.results)
    print(f"results: {path}")
    return result


if __name__ == "__main__":
    main()

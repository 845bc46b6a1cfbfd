"""Why are the payloads raw memmapped files and not zarr v3 arrays? Read latency and bytes.

A reader fetches one sample's byte ranges: its JPEG slice of jpeg.bin and its COCO strings slice
of counts.bin. This times exactly that, for one part of a packed store, from np.memmap and from zarr
v3 1-D arrays of the same data (uncompressed and blosc/zstd; two chunk sizes), with the page
cache warm and with the files' pages dropped (posix_fadvise DONTNEED, no root needed).
"""

from __future__ import annotations

import argparse
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from common import (
    add_input_args,
    args_dict,
    environment,
    evict,
    p50,
    p95,
    packed_store,
    print_header,
    print_table,
    source_tars,
    summary_row,
    work_dir,
    write_results,
)
from zarr.codecs import BloscCodec

from sa1b_pack import open_store
from sa1b_pack.store.format import COUNTS_PAYLOAD, JPEG_PAYLOAD, PARTS_DIR

CHUNKS = (64 * 1024, 1024 * 1024)  # elements
HEADERS = (
    "payload",
    "layout",
    "chunk",
    "bytes",
    "on disk",
    "vs raw",
    "warm p50 µs",
    "warm p95 µs",
    "cold p50 µs",
    "n warm/cold",
)


@dataclass
class Layout:
    """One way of holding a payload: how to read [a, b), and which files back it."""

    payload: str
    name: str
    chunk: str
    files: list[Path]
    read: Callable[[int, int], Any]

    @property
    def size(self) -> int:
        return sum(p.stat().st_size for p in self.files)

    @property
    def allocated(self) -> int:
        return sum(p.stat().st_blocks * 512 for p in self.files)


def sample_ranges(store: Any, part_index: int) -> dict[str, list[tuple[int, int]]]:
    """Per image of the part: its JPEG byte range and its counts.bin byte range (masks'
    strings are stored contiguously per image, so one range covers all of them)."""
    part = store.part(part_index)
    jpeg = [
        (int(o), int(o) + int(n)) for o, n in zip(part.jpeg_offset, part.jpeg_size, strict=True)
    ]
    counts = []
    for lo, n in zip(part.mask_start.tolist(), part.mask_count.tolist(), strict=True):
        if n:
            last = lo + n - 1
            end = int(part.counts_offset[last]) + int(part.counts_size[last])
            counts.append((int(part.counts_offset[lo]), end))
    return {"jpeg": jpeg, "counts": counts}


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def _fsync(paths: Sequence[Path]) -> None:
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def memmap_layout(payload: str, path: Path, dtype: np.dtype, largest: int) -> Layout:
    """The store's layout: slice the map and copy the bytes into a reused buffer (so the read
    really touches them; the store itself hands out the view and its consumer reads it).
    A cold read drops the map's pages too (common.evict)."""
    data = np.memmap(path, dtype=dtype, mode="r")
    out = np.empty(largest, dtype)
    out.fill(0)

    def read(a: int, b: int) -> np.ndarray:
        view = out[: b - a]
        np.copyto(view, data[a:b])
        return view

    return Layout(payload, "np.memmap (store)", "-", [path], read)


def zarr_layout(
    payload: str, data: np.ndarray, folder: Path, chunk: int, compressed: bool
) -> Layout:
    """Write ``data`` as a zarr v3 1-D array; reading is ``arr[a:b]``, as a user would."""
    codec = "zstd" if compressed else "none"
    path = folder / f"{payload}-{codec}-{chunk}"
    compressors = (
        BloscCodec(cname="zstd", clevel=3, shuffle="shuffle", typesize=data.dtype.itemsize)
        if compressed
        else None
    )
    array = zarr.create_array(
        store=path,
        shape=data.shape,
        chunks=(chunk,),
        dtype=data.dtype,
        compressors=compressors,
        overwrite=True,
    )
    array[:] = data
    files = _files(path)
    _fsync(files)
    reader = zarr.open_array(path, mode="r")
    name = f"zarr v3, {'blosc zstd-3 shuffle' if compressed else 'uncompressed'}"
    size = f"{chunk // 1024} Ki el = {_human(chunk * data.dtype.itemsize)}"
    return Layout(payload, name, size, files, lambda a, b: reader[a:b])


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" or n == int(n) else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def time_reads(
    layouts: Sequence[Layout], ranges: Sequence[tuple[int, int]], picks: Sequence[int], cold: bool
) -> dict[str, list[float]]:
    """Seconds per read of ranges[k] for k in picks, layouts interleaved (rotating) per read."""
    times: dict[str, list[float]] = {lay.name + lay.chunk: [] for lay in layouts}
    for lay in layouts:  # warm-up: open, first chunk index, event loop
        a, b = ranges[picks[0]]
        lay.read(a, b)
    for r, k in enumerate(picks):
        a, b = ranges[k]
        shift = r % len(layouts)
        for lay in list(layouts[shift:]) + list(layouts[:shift]):
            if cold:
                evict(lay.files)
            t0 = time.perf_counter()
            lay.read(a, b)
            times[lay.name + lay.chunk].append(time.perf_counter() - t0)
    return times


def check_equal(layouts: Sequence[Layout], ranges: Sequence[tuple[int, int]]) -> None:
    """Every layout returns the same bytes (untimed)."""
    for a, b in ranges[:3]:
        ref = np.array(layouts[0].read(a, b))
        for lay in layouts[1:]:
            if not np.array_equal(np.asarray(lay.read(a, b)), ref):
                raise AssertionError(f"{lay.payload} {lay.name} {lay.chunk}: bytes differ")


def reading(rows: list[list[Any]]) -> str:
    """What the table says, computed from it: memmap against the fastest zarr layout."""
    parts = []
    for payload in dict.fromkeys(r[0] for r in rows):
        mine = [r for r in rows if r[0] == payload]
        best = min(mine[1:], key=lambda r: r[6])
        cold = min(mine[1:], key=lambda r: r[8])
        parts.append(
            f"{payload.split(' (')[0]}: memmap {best[6] / mine[0][6]:.1f}x faster warm than the "
            f"fastest zarr layout ({best[1]}, {best[2]}); cold, memmap {mine[0][8]:,.0f} µs "
            f"against zarr's best {cold[8]:,.0f} µs ({mine[0][8] / cold[8]:.1f}x)"
        )
    return (
        "Reading: " + "; ".join(parts) + ". Cold, a memmap read is page faults with the "
        "kernel's read-around, a zarr chunk one read() call. Zarr earns its place for remote "
        "object storage (chunked, compressed byte ranges), not for a local store."
    )


def summary(rows: list[list[Any]]) -> list[dict[str, Any]]:
    """Per payload: the store's memmap and the fastest zarr layout (warm), cold in the notes."""
    out = []
    for payload in dict.fromkeys(r[0] for r in rows):
        mine = [r for r in rows if r[0] == payload]
        ours = mine[0]
        best = min(mine[1:], key=lambda r: r[6])
        for r in (ours, best):
            n = int(r[9].split("/")[0])
            ratio = "ref" if r is ours else f"{r[6] / ours[6]:.1f}x memmap's time"
            out.append(summary_row(
                f"{payload}: {r[1]}{'' if r is ours else ', ' + r[2]}", r[6], "µs", n=n,
                p95=r[7], ratio=ratio, dominated=f"cold p50 {r[8]:,.0f} µs; {r[5]} the raw bytes",
            ))  # fmt: skip
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_input_args(p)
    p.add_argument("--part", type=int, default=0, help="which part's payloads to use")
    p.add_argument("--reads", type=int, default=200, help="random sample reads per layout")
    p.add_argument("--cold-reads", type=int, default=40, help="the same, page cache dropped")
    p.add_argument("--max-mb", type=int, default=256, help="use samples within this prefix")
    args = p.parse_args(argv)
    if args.smoke:
        args.images, args.reads, args.cold_reads = 3, 10, 3
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    env = environment()
    print_header("payload_layout: raw memmap vs zarr v3 for jpeg.bin and counts.bin", env)
    tars = source_tars(args)
    with work_dir(args.store) as tmp:
        work = Path(tmp)
        store = open_store(packed_store(args, tars, work))
        folder = store.root / PARTS_DIR / store.shards[args.part]
        ranges = sample_ranges(store, args.part)
        part = store.part(args.part)
        rng = random.Random(args.seed)
        limit = args.max_mb * 2**20
        rows, raw = [], {}
        for payload, file_name, dtype in (
            ("jpeg", JPEG_PAYLOAD, part.jpeg.dtype),
            ("counts", COUNTS_PAYLOAD, part.counts.dtype),
        ):
            # Only the samples within the first --max-mb of the payload (a real part is ~10 GB).
            spans = [(a, b) for a, b in ranges[payload] if b * dtype.itemsize <= limit]
            spans = spans or ranges[payload][:1]
            data = np.fromfile(folder / file_name, dtype, count=max(b for _, b in spans))
            largest = max(b - a for a, b in spans)
            layouts = [memmap_layout(payload, folder / file_name, data.dtype, largest)]
            for compressed in (False, True):
                for chunk in CHUNKS:
                    layouts.append(zarr_layout(payload, data, work / "zarr", chunk, compressed))
            check_equal(layouts, spans)
            picks = [rng.randrange(len(spans)) for _ in range(args.reads + args.cold_reads)]
            warm = time_reads(layouts, spans, picks[: args.reads], cold=False)
            cold = time_reads(layouts, spans, picks[args.reads :], cold=True)
            raw_size = data.nbytes  # the prefix in use (the memmap row maps the whole file)
            mean_slice = np.mean([b - a for a, b in spans]) * data.dtype.itemsize
            for lay in layouts:
                key = lay.name + lay.chunk
                w_us, c_us = [t * 1e6 for t in warm[key]], [t * 1e6 for t in cold[key]]
                rows.append(
                    [f"{payload} ({_human(mean_slice)}/sample)", lay.name, lay.chunk, lay.size,
                     lay.allocated, f"{lay.size / raw_size:.2f}x", p50(w_us), p95(w_us),
                     p50(c_us), f"{len(w_us)}/{len(c_us)}"]
                )  # fmt: skip
                raw[f"{payload}/{key}"] = {"warm_s": warm[key], "cold_s": cold[key]}
        del store, part
    print()
    table = print_table(HEADERS, rows)
    notes = [
        "warm: page cache holds the files; cold: the layout's files evicted (madvise + "
        "posix_fadvise DONTNEED) before each read (a VM disk may still be cached by the host). "
        "memmap rows copy the bytes into a reused buffer; zarr returns a new array per read; "
        "uncompressed zarr pads the last chunk to full size, which only matters for payloads "
        "this small. Layouts interleaved per read, same random samples."
    ]
    notes.insert(0, reading(rows))
    print("\n" + "\n".join(notes) + f" allocator: {env['allocator']}")
    result = {
        "environment": env,
        "args": args_dict(args),
        "rows": [dict(zip(HEADERS, r, strict=True)) for r in rows],
        "summary": summary(rows),
        "notes": notes,
        "raw": raw,
        "table": table,
    }
    name = "payload_layout-smoke" if args.smoke else "payload_layout"
    print(f"results: {write_results(name, result, args.results)}")
    return result


if __name__ == "__main__":
    main()

"""Why the payloads are raw memmapped files and not zarr v3 arrays: read latency and bytes.

A reader fetches one sample's byte ranges: its JPEG slice of jpeg.bin and its COCO strings slice
of counts.bin. This times exactly that, for one part of a packed store, from np.memmap and from zarr
v3 1-D arrays of the same data (uncompressed and blosc/zstd; two chunk sizes), with the page
cache warm and with the files' pages dropped (posix_fadvise DONTNEED, no root needed).
"""

from __future__ import annotations

import argparse
import mmap
import os
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from common import (
    environment,
    p50,
    p95,
    print_header,
    print_table,
    synth_cached,
    write_results,
)
from zarr.codecs import BloscCodec

from sa1b_pack import open_store, pack
from sa1b_pack.format import COUNTS_PAYLOAD, JPEG_PAYLOAD, PARTS_DIR

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
    unmap: Callable[[], None] | None = None  # drop the process's own mapped pages first

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


def drop_cache(paths: Sequence[Path]) -> None:
    """Drop the files' clean pages from the page cache, so the next read goes to the disk."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def memmap_layout(payload: str, path: Path, dtype: np.dtype, largest: int) -> Layout:
    """The store's layout: slice the map and copy the bytes into a reused buffer (so the read
    really touches them; the store itself hands out the view and its consumer reads it).

    Mapped as np.memmap does, but with the mmap object at hand: the page cache keeps pages
    that a process maps, so a cold read must first drop them from the map (MADV_DONTNEED).
    """
    with open(path, "rb") as f:
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    data = np.frombuffer(mapped, dtype=dtype)
    out = np.empty(largest, dtype)
    out.fill(0)

    def read(a: int, b: int) -> np.ndarray:
        view = out[: b - a]
        np.copyto(view, data[a:b])
        return view

    def unmap() -> None:
        mapped.madvise(mmap.MADV_DONTNEED)

    return Layout(payload, "np.memmap (store)", "-", [path], read, unmap)


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
                if lay.unmap is not None:
                    lay.unmap()
                drop_cache(lay.files)
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


def build_store(args: argparse.Namespace, work: Path) -> Path:
    tars = synth_cached(args.shards, args.images, small=args.smoke, cache=args.cache)
    dst = work / "store"
    pack(tars[0].parent, dst, [int(p.stem[3:]) for p in tars], progress=False)
    return dst


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--store", type=Path, help="a packed store (default: pack synthetic shards)")
    p.add_argument("--part", type=int, default=0, help="which part's payloads to use")
    p.add_argument("--shards", type=int, default=2)
    p.add_argument("--images", type=int, default=6, help="images per shard")
    p.add_argument("--reads", type=int, default=200, help="random sample reads per layout")
    p.add_argument("--cold-reads", type=int, default=40, help="the same, page cache dropped")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", type=Path, default=None, help="synthetic shards cache folder")
    p.add_argument("--results", type=Path, default=None, help="results folder")
    p.add_argument("--smoke", "--quick", action="store_true", help="tiny images, for tests")
    args = p.parse_args(argv)
    if args.smoke:
        args.images, args.reads, args.cold_reads = 3, 10, 3
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    env = environment()
    print_header("payload_layout: raw memmap vs zarr v3 for jpeg.bin and counts.bin", env)
    with tempfile.TemporaryDirectory(prefix="sa1b-layout-") as tmp:
        work = Path(tmp)
        store = open_store(args.store or build_store(args, work))
        folder = store.root / PARTS_DIR / store.shards[args.part]
        ranges = sample_ranges(store, args.part)
        part = store.part(args.part)
        rng = random.Random(args.seed)
        rows, raw = [], {}
        for payload, file_name, dtype in (
            ("jpeg", JPEG_PAYLOAD, part.jpeg.dtype),
            ("counts", COUNTS_PAYLOAD, part.counts.dtype),
        ):
            # Read, not mapped: pages that any map of ours touched could not be dropped later.
            data = np.fromfile(folder / file_name, dtype)
            spans = ranges[payload]
            largest = max(b - a for a, b in spans)
            layouts = [memmap_layout(payload, folder / file_name, data.dtype, largest)]
            for compressed in (False, True):
                for chunk in CHUNKS:
                    layouts.append(zarr_layout(payload, data, work / "zarr", chunk, compressed))
            check_equal(layouts, spans)
            picks = [rng.randrange(len(spans)) for _ in range(args.reads + args.cold_reads)]
            warm = time_reads(layouts, spans, picks[: args.reads], cold=False)
            cold = time_reads(layouts, spans, picks[args.reads :], cold=True)
            raw_size = layouts[0].size
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
    print(
        "\nwarm: page cache holds the files; cold: posix_fadvise(DONTNEED) on the layout's files "
        "before each read (a VM disk may still be cached by the host). memmap rows copy the "
        "bytes into a reused buffer; zarr returns a new array per read; uncompressed zarr pads "
        "the last chunk to full size, which only matters for payloads this small. "
        f"Layouts interleaved per read, same random samples. allocator: {env['allocator']}"
    )
    result = {
        "environment": env,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "rows": [dict(zip(HEADERS, r, strict=True)) for r in rows],
        "raw": raw,
        "table": table,
    }
    name = "payload_layout-smoke" if args.smoke else "payload_layout"
    print(f"results: {write_results(name, result, args.results)}")
    return result


if __name__ == "__main__":
    main()

"""How should a per-image array attached to a part be stored: a raw fixed-stride file read
memory-mapped (locally) or by one byte range (object storage), or a zarr v3 array with one
chunk per image, uncompressed or compressed? (Not in `make bench`: a one-off decision, see
docs/decisions/attached-arrays.md.)

One part of ``--images`` teacher embeddings (256 x 64 x 64 float16 = 2 MiB each, SAM ViT-H's
image embedding), written in every layout; ``--reads`` random images read from each, layouts
interleaved per read, into a reused buffer (a loader copies the array into its batch anyway):
local warm, local cold (the layout's files evicted before each read), and on an S3-compatible
server (moto) on loopback, counting requests and bytes per read.

    python benchmarks/attached_layout.py [--images 64] [--reads 200] [--smoke]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import harness as h
import numpy as np

SHAPE = (256, 64, 64)
DTYPE = np.dtype("<f2")
RAW = "raw fixed-stride file"


def embeddings(images: int, seed: int) -> np.ndarray:
    """Stand-ins for teacher embeddings: per channel a smooth field plus noise, float16. Real
    ViT-H embeddings are dense floats too; their low mantissa bits are noise-like, which is
    what decides how well a compressor does."""
    rng = np.random.default_rng(seed)
    out = np.empty((images, *SHAPE), DTYPE)
    yy, xx = np.mgrid[0:64, 0:64] / 64.0
    for i in range(images):
        freq = rng.uniform(0.5, 4.0, (SHAPE[0], 1, 1))
        phase = rng.uniform(0, 2 * np.pi, (SHAPE[0], 1, 1))
        smooth = np.sin(freq * (xx + yy)[None] * np.pi + phase) * rng.uniform(
            0.1, 1, (SHAPE[0], 1, 1)
        )
        out[i] = smooth + rng.normal(0, 0.1, SHAPE)
    return out


def zarr_layouts() -> dict[str, dict]:
    from zarr.codecs import BloscCodec, BloscShuffle, ZstdCodec

    return {
        "zarr v3, uncompressed": {"compressors": None},
        "zarr v3, zstd-3": {"compressors": ZstdCodec(level=3)},
        "zarr v3, blosc zstd-3 shuffle": {
            "compressors": BloscCodec(cname="zstd", clevel=3, shuffle=BloscShuffle.shuffle)
        },
    }


def write_layouts(data: np.ndarray, root: str, fs=None) -> dict[str, str]:
    """Every layout of ``data`` under ``root`` (a local folder or an s3:// URL)."""
    import zarr

    paths = {RAW: f"{root}/raw.bin"}
    if fs is None:
        data.tofile(paths[RAW])
    else:
        fs.pipe_file(paths[RAW].removeprefix("s3://"), data.tobytes())
    for i, (name, kwargs) in enumerate(zarr_layouts().items()):
        paths[name] = f"{root}/z{i}.zarr"
        z = zarr.create_array(paths[name], shape=data.shape, chunks=(1, *SHAPE), dtype=DTYPE,
                              zarr_format=3, **kwargs)  # fmt: skip
        z[:] = data
    return paths


def files_of(path: str) -> list[Path]:
    """The file, or every file of a folder."""
    return (
        [Path(path)] if os.path.isfile(path) else [p for p in Path(path).rglob("*") if p.is_file()]
    )


def disk_bytes(path: str) -> tuple[int, int]:
    """(file bytes, bytes on disk) of a file or a folder."""
    files = files_of(path)
    return sum(p.stat().st_size for p in files), sum(p.stat().st_blocks * 512 for p in files)


def local_readers(paths: dict[str, str], images: int) -> dict:
    import zarr

    from sa1b_pack.read.parts import prefetch

    nbytes = int(np.prod(SHAPE)) * DTYPE.itemsize
    readers = {}
    for name, path in paths.items():
        if name.startswith("raw"):
            mapped = np.memmap(path, np.uint8, "r")
            flat = mapped.view(DTYPE).reshape(images, *SHAPE)
            readers[name] = lambda i, out, m=flat: np.copyto(out, m[i])

            def advised(i, out, m=flat, raw=mapped):  # the store's read path (parts.prefetch)
                prefetch(raw, i * nbytes, nbytes)
                np.copyto(out, m[i])

            readers[f"{name} + MADV_WILLNEED"] = advised
        else:
            z = zarr.open_array(path, mode="r")
            readers[name] = lambda i, out, z=z: np.copyto(out, z[i])
    return readers


class Counter:
    """Requests and bytes through the fsspec filesystem instances it watches (sync and async
    paths both end in ``_cat_file``)."""

    def __init__(self) -> None:
        self.requests = self.bytes = 0
        self.watched: set[int] = set()  # fsspec caches instances: wrap each one once

    def watch(self, fs) -> None:
        if id(fs) in self.watched:
            return
        self.watched.add(id(fs))
        original = fs._cat_file

        async def counted(path, start=None, end=None, **kw):
            data = await original(path, start=start, end=end, **kw)
            self.requests += 1
            self.bytes += len(data)
            return data

        fs._cat_file = counted


def s3_readers(paths: dict[str, str], fs, counter: Counter) -> dict:
    import zarr
    from zarr.storage import FsspecStore

    nbytes = int(np.prod(SHAPE)) * DTYPE.itemsize
    readers = {}
    for name, url in paths.items():
        if name.startswith("raw"):
            key = url.removeprefix("s3://")

            def read(i, out, key=key):
                data = fs.cat_file(key, start=i * nbytes, end=(i + 1) * nbytes)
                counter.requests += 1  # the sync wrapper does not go through the watched method
                counter.bytes += len(data)
                np.copyto(out, np.frombuffer(data, DTYPE).reshape(SHAPE))

            readers[name] = read
        else:
            store = FsspecStore.from_url(url, read_only=True)
            counter.watch(store.fs)
            z = zarr.open_array(store, mode="r")
            readers[name] = lambda i, out, z=z: np.copyto(out, z[i])
    return readers


def measure(readers: dict, order: list[int], before=None) -> dict[str, list[float]]:
    """Seconds per read of each layout, layouts interleaved per read (rotating order)."""
    out = {name: [] for name in readers}
    buf = np.empty(SHAPE, DTYPE)
    names = list(readers)
    for r, i in enumerate(order):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            if before is not None:
                before(name)
            t0 = time.perf_counter()
            readers[name](i, buf)
            out[name].append(time.perf_counter() - t0)
    return out


def check_equal(readers: dict, data: np.ndarray, order: list[int]) -> None:
    buf = np.empty(SHAPE, DTYPE)
    for name, read in readers.items():
        for i in order[:3]:
            read(i, buf)
            assert np.array_equal(buf, data[i]), name


def reading(warm: dict, cold: dict, remote: dict) -> str:
    """The conclusion, computed from the medians: each case against the fastest raw read."""

    def against_raw(times: dict) -> str:
        raw = min((n for n in times if n.startswith("raw")), key=lambda n: h.p50(times[n]))
        rest = ", ".join(f"{n} {h.x(h.ratio(times[n], times[raw]))}" for n in times if n != raw)
        return f"fastest raw read: {raw} ({h.p50(times[raw]) * 1e3:.2f} ms); others: {rest}"

    return "; ".join(f"{what}: {against_raw(t)}" for what, t in
                     (("warm", warm), ("cold", cold), ("loopback S3", remote)))  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--reads", type=int, default=200)
    p.add_argument("--cold-reads", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke", action="store_true", help="8 images, 10 reads: for tests")
    p.add_argument("--results", type=Path, default=h.RESULTS_DIR)
    args = p.parse_args(argv)
    if args.smoke:
        args.images, args.reads, args.cold_reads = 8, 10, 4
    env = h.environment()
    print(f"$ {env['command']}")
    data = embeddings(args.images, args.seed)
    rng = np.random.default_rng(args.seed)
    order = rng.integers(0, args.images, args.reads).tolist()
    cold_order = rng.integers(0, args.images, args.cold_reads).tolist()
    mib = data[0].nbytes / 2**20
    rows = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        paths = write_layouts(data, tmp)
        readers = local_readers(paths, args.images)
        check_equal(readers, data, order)
        files = {name: files_of(path) for name, path in paths.items()}
        files[f"{RAW} + MADV_WILLNEED"] = files[RAW]
        paths[f"{RAW} + MADV_WILLNEED"] = paths[RAW]
        measure(readers, list(range(args.images)))  # warm: every image in the page cache
        warm = measure(readers, order)
        cold = measure(readers, cold_order, before=lambda name: h.evict(files[name]))
        raw_bytes = disk_bytes(paths[RAW])[0]
        for name in readers:
            size, on_disk = disk_bytes(paths[name])
            what = f"{size:,} B ({h.x(size / raw_bytes)} raw), {on_disk:,} B on disk"
            rel = h.x(h.ratio(warm[name], warm[RAW]))
            rows.append(h.latency(f"local warm: {name}", warm[name], f"{rel} raw", what))
        for name in readers:
            rel = h.x(h.ratio(cold[name], cold[RAW]))
            rows.append(h.latency(f"local cold: {name}", cold[name], f"{rel} raw",
                                  "files evicted before each read"))  # fmt: skip
    from remote_reads import start_s3

    server = start_s3()
    try:
        import fsspec

        fs = fsspec.filesystem("s3", asynchronous=False)
        counter = Counter()
        counter.watch(fs)
        paths = write_layouts(data, "s3://bench/part", fs=fs)
        readers = s3_readers(paths, fs, counter)
        check_equal(readers, data, order)
        remote = {name: [] for name in readers}
        stats = {}
        buf = np.empty(SHAPE, DTYPE)
        names = list(readers)
        for name in names:
            stats[name] = [0, 0]
        for r, i in enumerate(order):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                r0, b0 = counter.requests, counter.bytes
                t0 = time.perf_counter()
                readers[name](i, buf)
                remote[name].append(time.perf_counter() - t0)
                stats[name][0] += counter.requests - r0
                stats[name][1] += counter.bytes - b0
        for name in names:
            req, nb = (v / len(order) for v in stats[name])
            rel = h.x(h.ratio(remote[name], remote[RAW]))
            rows.append(h.latency(f"loopback S3: {name}", remote[name], f"{rel} raw",
                                  f"{req:.2f} requests, {nb / 1e6:.2f} MB per read"))  # fmt: skip
        for mib in (4, 32, 128):  # the server's own cost: does a range cost its object's size?
            fs.pipe_file(f"bench/size-{mib}", bytes(mib << 20))
            key, n = f"bench/size-{mib}", len(order) // 4 or 1
            t = h.per_call(lambda _, k=key: fs.cat_file(k, start=1 << 20, end=3 << 20), range(n))
            rows.append(h.latency(f"loopback S3: 2 MiB range of a {mib} MiB object", t,
                                  what="is a range priced by its object?"))  # fmt: skip
    finally:
        server.stop()
    print(f"# {args.images} images x {mib:.0f} MiB ({SHAPE} {DTYPE}); {args.reads} random "
          f"reads warm and on S3, {args.cold_reads} cold; interleaved per read")  # fmt: skip
    print(h.text_table(rows))
    print("\nreading: " + reading(warm, cold, remote))
    name = f"attached_layout-{'smoke-' * args.smoke}{h.run_name()}.json"
    print(f"results: {h.write_json(args.results / name, {'environment': env, 'rows': rows})}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Shared benchmark helpers: timing, percentiles, tables, environment, results, cached inputs.

Every report states how it was measured (repeats, medians, allocator settings, versions),
because on a small shared VM a number without its context cannot be compared to anything.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime as dt
import hashlib
import importlib.metadata
import json
import mmap
import os
import platform
import resource
import shlex
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
CACHE_DIR = BENCH_DIR / ".cache"

# pycocotools 2.0.11 under numpy 2 warns about its own __array__ on every decode: not ours.
warnings.filterwarnings("ignore", message="__array__ implementation", category=DeprecationWarning)


def measure(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> list[float]:
    """Seconds per call of ``fn`` over ``repeats`` calls, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def measure_side_by_side(
    cases: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1
) -> dict[str, list[float]]:
    """``measure`` for several callables, interleaved round by round (rotating the order).

    On a noisy machine a ratio is only meaningful if both sides saw the same noise: each round
    runs every case once, so a slow minute hits all of them.
    """
    names = list(cases)
    for _ in range(warmup):
        for name in names:
            cases[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            t0 = time.perf_counter()
            cases[name]()
            times[name].append(time.perf_counter() - t0)
    return times


def p50(values: Sequence[float]) -> float:
    return float(np.median(values))


def p95(values: Sequence[float]) -> float:
    return float(np.percentile(values, 95))


def p99(values: Sequence[float]) -> float:
    return float(np.percentile(values, 99))


# ---------------------------------------------------------------------------------------------
# The summary: every script also reports its headline rows in one schema, so that run_all.py can
# print one table for the whole run and report.py can render the README from the JSON.

SUMMARY_HEADERS = ("measure", "p50", "unit", "p95", "p99", "n", "ratio", "dominated by")


def summary_row(
    measure: str,
    value: float,
    unit: str,
    *,
    n: int,
    p95: float = float("nan"),
    p99: float = float("nan"),
    ratio: str = "",
    dominated: str = "",
) -> dict[str, Any]:
    """One headline row; ``n`` is how many timed repeats the percentiles come from."""
    values = (measure, value, unit, p95, p99, n, ratio, dominated)
    return dict(zip(SUMMARY_HEADERS, values, strict=True))


def print_summary(rows: Sequence[dict[str, Any]], first: Sequence[str] = ()) -> str:
    """Print summary rows (plus leading columns ``first``, e.g. the script) as one table."""
    headers = [*first, *SUMMARY_HEADERS]
    return print_table(headers, [[row.get(h, "") for h in headers] for row in rows])


def latency_row(
    measure: str, seconds: Sequence[float], *, ratio: str = "", dominated: str = ""
) -> dict[str, Any]:
    """p50/p95/p99 of per-call seconds, in ms (µs below 1 ms)."""
    scale, unit = (1e3, "ms") if p50(seconds) >= 1e-3 else (1e6, "µs")
    v = [t * scale for t in seconds]
    return summary_row(
        measure, p50(v), unit, n=len(v), p95=p95(v), p99=p99(v), ratio=ratio, dominated=dominated
    )


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Fixed-width text table: text columns left-aligned, numbers right-aligned."""
    cells = [[str(h) for h in headers]] + [[format_cell(v) for v in row] for row in rows]
    widths = [max(len(r[c]) for r in cells) for c in range(len(headers))]
    numeric = [all(_is_number(row[c]) for row in rows) for c in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(row, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    text = format_table(headers, rows)
    print(text, flush=True)
    return text


def format_cell(value: Any) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float)


def allocator_settings() -> str:
    """MALLOC_* variables as set, or 'glibc defaults': freed-page behaviour changes timings."""
    found = {k: v for k, v in sorted(os.environ.items()) if k.startswith("MALLOC_")}
    return " ".join(f"{k}={v}" for k, v in found.items()) or "glibc defaults"


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment() -> dict[str, Any]:
    """What a reader needs to judge the numbers: versions, CPUs, allocator, date, host."""
    return {
        "command": command_line(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": _version("numba"),
        "pycocotools": _version("pycocotools"),
        "pyarrow": _version("pyarrow"),
        "simplejpeg": _version("simplejpeg"),
        "pillow": _version("pillow"),
        "zarr": _version("zarr"),
        "torch": _version("torch"),
        "webdataset": _version("webdataset"),
        "litdata": _version("litdata"),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": _cpu_model(),
        "allocator": allocator_settings(),
        "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")},
        "numba_disable_jit": os.environ.get("NUMBA_DISABLE_JIT", "0"),
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "host": platform.node(),
        "platform": platform.platform(),
    }


def command_line() -> str:
    """The command as typed (interpreter included), so a report says how to reproduce it."""
    return shlex.join(getattr(sys, "orig_argv", [sys.executable, *sys.argv]))


def print_header(title: str, env: dict[str, Any]) -> None:
    print(f"$ {env['command']}")
    print(f"# {title}")
    print(
        f"# {env['date']}  host={env['host']}  cpus={env['cpus_usable']}/{env['cpu_count']} "
        f"({env['cpu_model']})"
    )
    print(
        f"# python {env['python']}  numpy {env['numpy']}  numba {env['numba']}  "
        f"pycocotools {env['pycocotools']}  pyarrow {env['pyarrow']}"
    )
    print(f"# allocator: {env['allocator']}  NUMBA_DISABLE_JIT={env['numba_disable_jit']}")
    print(flush=True)


def peak_rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    """Peak resident set size so far, MB (``RUSAGE_CHILDREN``: the largest waited-for child)."""
    return resource.getrusage(who).ru_maxrss / 1024  # KiB on Linux


def run_name() -> str:
    """``<date>-<host>``: how a run's files are named."""
    host = "".join(c if c.isalnum() or c in "-_." else "_" for c in platform.node()) or "host"
    return f"{dt.date.today().isoformat()}-{host}"


def write_results(name: str, data: dict[str, Any], root: str | os.PathLike | None = None) -> Path:
    """Write ``data`` as JSON to ``<root>/<name>-<date>-<host>.json`` atomically; the path."""
    folder = Path(root) if root is not None else RESULTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (f"{name}-{run_name()}.json" if name else f"{run_name()}.json")
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n")
    os.replace(tmp, path)
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def synth_cached(
    shards: int | Sequence[int],
    images_per_shard: int,
    *,
    small: bool,
    seed: int = 0,
    cache: str | os.PathLike | None = None,
) -> list[Path]:
    """Synthetic shards (0..shards-1, or the listed indices), generated once per parameter set
    and synth.py version, missing ones in parallel.

    Full-size shards cost ~0.3 s per image to make, so they are kept; the key includes a hash
    of synth.py so that a change to the generator never serves stale shards.
    """
    from sa1b_pack.testing import synth

    indices = list(range(shards)) if isinstance(shards, int) else [int(i) for i in shards]
    code = sorted(Path(synth.__file__).parent.glob("synth*.py"))  # synth.py, synth_image.py
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in code)).hexdigest()[:10]
    size = "small" if small else "full"
    key = f"shards-{size}-{len(indices)}x{images_per_shard}-s{seed}-{digest}"
    if indices != list(range(len(indices))):
        key += "-" + "_".join(map(str, indices))
    folder = Path(cache or CACHE_DIR) / key
    paths = [folder / f"sa_{index:06d}.tar" for index in indices]
    # synth writes atomically: a present file is complete
    missing = [i for i, path in zip(indices, paths, strict=True) if not path.is_file()]
    if missing:
        jobs = min(len(missing), os.cpu_count() or 1)
        synth.synth_shards(
            folder, missing, images_per_shard, small=small, seed=seed, jobs=jobs, progress=False
        )
    return paths


# ---------------------------------------------------------------------------------------------
# Inputs shared by every script: the same source shards and the same packed store


def add_input_args(p: argparse.ArgumentParser, images: int = 24) -> None:
    """--src/--shards (real shards) or synthetic ones, --store, cache, results, seed, smoke."""
    p.add_argument("--src", type=Path, help="folder of sa_NNNNNN.tar (default: synthetic)")
    p.add_argument("--shards", default="0-1", help="shard indices, e.g. 0-3 or 3,7")
    p.add_argument("--images", type=int, default=images, help="images per synthetic shard")
    p.add_argument("--store", type=Path, help="a store packed from those shards (else packed)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", type=Path, default=None, help="synthetic shards cache folder")
    p.add_argument("--results", type=Path, default=None, help="results folder")
    p.add_argument("--smoke", "--quick", action="store_true", help="tiny images, for tests")


def source_tars(args: argparse.Namespace) -> list[Path]:
    """The shards every measurement of a run reads: real ones from --src, else synthetic."""
    from sa1b_pack.source.shards import find_shards, parse_shards

    indices = parse_shards(str(args.shards))
    if args.src is not None:
        return [Path(p) for p in find_shards(args.src, indices).values()]  # local files
    images = 3 if args.smoke else args.images
    return synth_cached(indices, images, small=args.smoke, seed=args.seed, cache=args.cache)


def packed_store(args: argparse.Namespace, tars: Sequence[Path], work: Path) -> Path:
    """--store if given, else the shards packed (untimed) into ``work/store``."""
    if args.store is not None:
        return args.store
    from sa1b_pack import pack

    dst = work / "store"
    report = pack(tars[0].parent, dst, [int(p.stem[3:]) for p in tars], progress=False)
    if not report.ok:
        raise SystemExit(f"packing failed: {report.failed}")
    return dst


def input_description(args: argparse.Namespace, tars: Sequence[Path]) -> str:
    if args.src is not None:
        return f"{len(tars)} real shards from {args.src}"
    size = "small synthetic images (smoke)" if args.smoke else "full-size synthetic SA-1B"
    return f"{len(tars)} shards x {3 if args.smoke else args.images} images, {size}"


def work_dir(near: Path | None = None) -> tempfile.TemporaryDirectory:
    """A scratch folder, on the store's file system when there is one (cold reads hit it)."""
    folder = near.resolve().parent if near is not None else None
    return tempfile.TemporaryDirectory(prefix="sa1b-bench-", dir=folder)


def spread(count: int, k: int, seed: int) -> list[int]:
    """``k`` of ``range(count)``, drawn without replacement (seeded), ascending."""
    if k >= count:
        return list(range(count))
    return sorted(np.random.default_rng(seed).choice(count, size=k, replace=False).tolist())


def args_dict(args: argparse.Namespace) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}


# ---------------------------------------------------------------------------------------------
# Cold page cache

_libc = ctypes.CDLL(None, use_errno=True)


def evict(paths: Iterable[str | os.PathLike]) -> None:
    """Drop the files' pages from the page cache, so the next read goes to the disk.

    The kernel keeps pages that any process maps, so this process's own mappings of the files
    (a store's memmaps) first lose their pages (madvise DONTNEED: the mapping stays valid and
    refaults on the next touch), then posix_fadvise(DONTNEED) drops the clean pages. No root
    needed. A VM's host may still hold the data in its own cache: "cold" is cold for the guest.
    """
    wanted = {os.path.realpath(p) for p in paths}
    try:
        with open("/proc/self/maps") as f:
            maps = f.readlines()
    except OSError:
        maps = []
    for line in maps:
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5].rstrip("\n") in wanted:
            lo, hi = (int(x, 16) for x in fields[0].split("-"))
            _libc.madvise(ctypes.c_void_p(lo), ctypes.c_size_t(hi - lo), mmap.MADV_DONTNEED)
    for path in wanted:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def store_files(root: str | os.PathLike) -> list[Path]:
    """Every file of a store's parts: what a cold read must find on disk."""
    return sorted(p for p in (Path(root) / "parts").rglob("*") if p.is_file())


def flat_view(buffer: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A C-contiguous ``shape`` view on the front of a reused flat uint8 buffer."""
    return buffer[: int(np.prod(shape))].reshape(shape)

"""Shared benchmark helpers: timing, percentiles, tables, environment, results, cached inputs.

Every report states how it was measured (repeats, medians, allocator settings, versions),
because on a small shared VM a number without its context cannot be compared to anything.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.metadata
import json
import os
import platform
import shlex
import sys
import time
import warnings
from collections.abc import Callable, Sequence
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


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Fixed-width text table: text columns left-aligned, numbers right-aligned."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
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


def _cell(value: Any) -> str:
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


def write_results(name: str, data: dict[str, Any], root: str | os.PathLike | None = None) -> Path:
    """Write ``data`` as JSON to ``<root>/<name>-<date>-<host>.json`` atomically; the path."""
    folder = Path(root) if root is not None else RESULTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    date = dt.date.today().isoformat()
    host = "".join(c if c.isalnum() or c in "-_." else "_" for c in platform.node()) or "host"
    path = folder / f"{name}-{date}-{host}.json"
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
    shards: int,
    images_per_shard: int,
    *,
    small: bool,
    seed: int = 0,
    cache: str | os.PathLike | None = None,
) -> list[Path]:
    """Synthetic shards 0..shards-1, generated once per parameter set and synth.py version.

    Full-size shards cost ~0.5 s per image to make, so they are kept; the key includes a hash
    of synth.py so that a change to the generator never serves stale shards.
    """
    from sa1b_pack import synth

    digest = hashlib.sha256(Path(synth.__file__).read_bytes()).hexdigest()[:10]
    size = "small" if small else "full"
    key = f"shards-{size}-{shards}x{images_per_shard}-s{seed}-{digest}"
    folder = Path(cache or CACHE_DIR) / key
    paths = []
    for index in range(shards):
        path = folder / f"sa_{index:06d}.tar"
        if not path.is_file():  # synth_shard writes atomically: a present file is complete
            synth.synth_shard(folder, index, images_per_shard, small=small, seed=seed)
        paths.append(path)
    return paths


def flat_view(buffer: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A C-contiguous ``shape`` view on the front of a reused flat uint8 buffer."""
    return buffer[: int(np.prod(shape))].reshape(shape)

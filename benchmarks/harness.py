"""The one benchmark harness: a registry of questions, timing, rows, environment, inputs, JSON.

A question is ``@question(key, "the question?")`` over ``fn(ctx) -> Result`` (rows: p50/p95 of
measured values, and notes); run.py runs each in its own process, readings.py computes its
conclusions from its rows. Timing is our own ``side_by_side``, not pyperf: ratios must come from
interleaved rounds (every case once per round, order rotated, so a noisy minute hits both
sides), many measures are not a function in a loop (a DataLoader epoch, a pack into a folder
emptied untimed before each call), and pyperf's calibrated worker processes would multiply the
run's minutes. So: medians, p95, n repeats, all visible.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import shlex
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
CACHE_DIR = BENCH_DIR / ".cache"
HEADERS = ("measure", "p50", "unit", "p95", "n", "ratio", "what")
VERSIONS = ("numpy", "numba", "pyarrow", "simplejpeg", "pillow", "opencv-python-headless",
            "pycocotools", "torch", "webdataset")  # fmt: skip
ENV_PREFIXES = ("MALLOC_", "OPENBLAS_", "OMP_", "MKL_", "NUMBA_", "PYTHONMALLOC")

# pycocotools 2.0.x under numpy 2 warns about its own __array__ on every decode: not ours.
warnings.filterwarnings("ignore", message="__array__ implementation", category=DeprecationWarning)


@dataclass
class Ctx:
    """What a question may use: the shards, the packed store, a scratch folder, the sizes."""

    tars: list[Path]
    store: Path
    work: Path
    smoke: bool = False
    full: bool = False
    seed: int = 0

    def size(self, normal: int, smoke: int, full: int | None = None) -> int:
        """A size for this run: ``smoke`` in tests, ``full`` on real shards, else ``normal``."""
        return smoke if self.smoke else (full if self.full and full is not None else normal)


@dataclass
class Result:
    """A question's answer; its reading lines are computed later from ``rows`` (readings.py)."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # how it was measured
    skipped: list[str] = field(default_factory=list)  # cases left out, each with its reason


QUESTIONS: dict[str, tuple[str, Callable[[Ctx], Result], str]] = {}


def question(key: str, text: str) -> Callable:
    """Register ``fn(ctx) -> Result`` as the answer to ``text`` under ``key``."""

    def register(fn: Callable[[Ctx], Result]) -> Callable[[Ctx], Result]:
        QUESTIONS[key] = (text, fn, Path(sys.modules[fn.__module__].__file__ or "").name)
        return fn

    return register


def side_by_side(cases: dict[str, Callable[[], Any]], rounds: int, warmup: int = 1,
                 before: Callable[[], Any] | None = None) -> dict:  # fmt: skip
    """Seconds per call of each case; each round runs every case once, in rotating order;
    ``before()`` (e.g. clean up) runs untimed before each call."""
    names, clock = list(cases), time.perf_counter
    out: dict[str, list[float]] = {name: [] for name in names}
    for r in range(-warmup, rounds):  # the warm-up rounds first, untimed
        for name in names[r % len(names) :] + names[: r % len(names)]:
            if before is not None:
                before()
            t0 = clock()
            cases[name]()
            if r >= 0:
                out[name].append(clock() - t0)
    return out


def p50(values: Sequence[float]) -> float:
    return float(np.median(values))


def ratio(a: Sequence[float], b: Sequence[float]) -> float:
    """p50(a) / p50(b): the medians the table shows (take a and b from interleaved rounds)."""
    return p50(a) / p50(b)


def x(value: float) -> str:
    """A ratio as text: 1.16x, 21x."""
    return f"{value:.0f}x" if value >= 20 else f"{value:.2f}x"


def row(measure: str, values: Sequence[float], unit: str, ratio: str = "", what: str = "") -> dict:
    """One table row: p50 of ``values`` (already in ``unit``), p95 when there are >= 10."""
    v = list(values)
    q95 = float(np.percentile(v, 95)) if len(v) >= 10 else float("nan")
    out = dict(zip(HEADERS, (measure, p50(v), unit, q95, len(v), ratio, what), strict=True))
    return out | {"values": [float(f"{a:.4g}") for a in v]}  # raw, for the JSON


def latency(measure: str, seconds: Sequence[float], ratio: str = "", what: str = "") -> dict:
    """A row of per-call seconds, in ms (µs below 1 ms)."""
    scale, unit = (1e3, "ms") if p50(seconds) >= 1e-3 else (1e6, "µs")
    return row(measure, [t * scale for t in seconds], unit, ratio, what)


def format_cell(value: Any) -> str:
    if isinstance(value, float):
        if value != value:
            return "-"
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.{1 if abs(value) >= 10 else 2}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def text_table(rows: Sequence[dict[str, Any]], headers: Sequence[str] = HEADERS) -> str:
    """Fixed-width table: numeric columns right-aligned."""
    cells = [list(headers)] + [[format_cell(r.get(h, "")) for h in headers] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(headers))]
    num = [all(isinstance(r.get(h), int | float) for r in rows) for h in headers]
    lines = ["  ".join(c.rjust(w) if n else c.ljust(w) for c, w, n in zip(r, widths, num,
             strict=True)).rstrip() for r in cells]  # fmt: skip
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def write_json(path: Path, data: dict[str, Any]) -> Path:
    """Atomically (no half-written results)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    plain = lambda v: v.tolist() if isinstance(v, np.generic | np.ndarray) else str(v)  # noqa: E731
    tmp.write_text(json.dumps(data, indent=1, default=plain) + "\n")
    os.replace(tmp, path)
    return path


def run_name() -> str:
    host = "".join(c if c.isalnum() or c in "-_." else "_" for c in platform.node()) or "host"
    return f"{dt.date.today().isoformat()}-{host}"


def cpu_model() -> str:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    found = re.search(r"^model name\s*:\s*(.+)$", info, re.M)
    return found[1].strip() if found else platform.processor() or "unknown"


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def environment() -> dict[str, Any]:
    """What a reader needs to judge the numbers: machine, allocator/threads env, versions."""
    tuning = {k: v for k, v in sorted(os.environ.items()) if k.startswith(ENV_PREFIXES)}
    return {"command": shlex.join(getattr(sys, "orig_argv", [sys.executable, *sys.argv])),
            "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "host": platform.node(), "platform": platform.platform(), "cpu_model": cpu_model(),
            "cpu_count": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)),
            "loadavg": os.getloadavg(),  # other work on the machine skews every number
            "env": tuning, "allocator": " ".join(f"{k}={v}" for k, v in tuning.items()) or
            "defaults", "python": platform.python_version(),
            "versions": {d: _version(d) for d in VERSIONS}}  # fmt: skip


def synth_cached(indices: Sequence[int], images: int, small: bool, cache: Path | None) -> list:
    """Synthetic shards, made once per parameters and generator version (they cost ~0.3 s per
    full-size image), in ``cache`` (default benchmarks/.cache)."""
    from sa1b_pack.testing import synth

    code = sorted(Path(synth.__file__).parent.glob("synth*.py"))
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in code)).hexdigest()[:10]
    key = f"{'small' if small else 'full'}-{images}-{digest}"
    folder = Path(cache or CACHE_DIR) / key
    paths = [folder / f"sa_{i:06d}.tar" for i in indices]
    missing = [i for i, p in zip(indices, paths, strict=True) if not p.is_file()]
    if missing:  # synth writes atomically: a present file is complete
        jobs = min(len(missing), os.cpu_count() or 1)
        synth.synth_shards(folder, missing, images, small=small, jobs=jobs, progress=False)
    return paths


def pack_store(tars: Sequence[Path], dst: Path, **kwargs: Any) -> Path:
    from sa1b_pack import pack

    report = pack(tars[0].parent, dst, [int(p.stem[3:]) for p in tars], progress=False, **kwargs)
    if not report.ok:
        raise SystemExit(f"packing {dst} failed: {report}")
    return dst


def recipe(ctx: Ctx, filtered: bool = True, **more: Any) -> dict[str, Any]:
    """The SAM training recipe the questions time (smaller in smoke runs), quality filters on."""
    out = dict(image_size=ctx.size(1024, 64), mask_size=ctx.size(256, 16), max_masks=64,
               seed=ctx.seed)  # fmt: skip
    if filtered:
        out.update(min_predicted_iou=0.88, min_stability_score=0.95, min_area=100)
    return out | more


def drain(loader: Iterable) -> None:
    """One epoch: batches received, not touched, as a trainer receives them."""
    for _ in loader:
        pass


def spread(count: int, k: int, seed: int) -> list[int]:
    """``k`` of ``range(count)`` drawn without replacement (seeded), ascending."""
    if k >= count:
        return list(range(count))
    return sorted(np.random.default_rng(seed).choice(count, size=k, replace=False).tolist())


def with_masks(store: Any, k: int, seed: int) -> list[int]:
    """``k`` indices of samples that have masks (seeded draw)."""
    have = [i for i in range(len(store)) if len(store[i]) > 0]
    return [have[j] for j in spread(len(have), k, seed)]


def mask_buffer(store: Any, indices: Sequence[int], k: int = 0, least: int = 0) -> np.ndarray:
    """A faulted buffer for the full-size masks (at least ``k``) of any of these samples."""
    need = max(max(len(store[i]), k) * store[i].height * store[i].width for i in indices)
    return faulted(max(need, least))


def flat_view(buffer: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A C-contiguous ``shape`` view on the front of a reused flat buffer."""
    return buffer[: int(np.prod(shape))].reshape(shape)


def faulted(nbytes: int) -> np.ndarray:
    """A flat uint8 buffer with every page already faulted in (not inside a timed call)."""
    buffer = np.empty(max(nbytes, 1), np.uint8)
    buffer.fill(1)
    return buffer

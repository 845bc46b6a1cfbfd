"""SAM-style prompts drawn from the runs (3 points + noisy boxes, and 2 box negatives) against
today's recipe, per sample; and what stage statistics cost (SA1BLoader stats on vs off, and
the recording calls alone)."""

from __future__ import annotations

import time

from harness import Ctx, Result, p50, question, ratio, recipe, row, side_by_side, spread, x

from sa1b_pack.torch import SA1BDataset, SA1BLoader
from sa1b_pack.train.recipe import Recipe, training_sample
from sa1b_pack.train.stats import READ, StageTimes

PROMPTS = {"today's recipe (stored point, exact boxes)": {},
           "3 points + noisy boxes": dict(points_per_mask=3, box_noise=0.1),
           "3 points + 2 box negatives + noisy boxes": dict(points_per_mask=3, negative_points=2,
                                                            box_noise=0.1)}  # fmt: skip
TODAY = next(iter(PROMPTS))


@question("prompts", "What do SAM-style prompts from the runs cost per sample, and what do the "
          "loader's stage statistics cost?")  # fmt: skip
def prompts(ctx: Ctx) -> Result:
    base = recipe(ctx)
    size, m = base["image_size"], base["mask_size"]
    ds = SA1BDataset(ctx.store, **base)
    positions = spread(len(ds), ctx.size(48, 6, 96), ctx.seed)
    picks = [int(ds.index[p]) for p in positions]
    n, rounds = len(picks), ctx.size(5, 1)
    cases = {name: (Recipe(**base, **extra), StageTimes()) for name, extra in PROMPTS.items()}
    for r, _ in cases.values():  # untimed: kernels loaded, pages warm
        for i in picks:
            training_sample(ds.store, i, r)
    ms: dict[str, list[float]] = {name: [] for name in PROMPTS}  # per sample, its median
    rel: dict[str, list[float]] = {name: [] for name in PROMPTS}  # per sample, / today's
    for i in picks:  # the recipes side by side on each sample: image and load drift cancel
        sec = side_by_side({name: (lambda i=i, r=r, t=t: training_sample(ds.store, i, r,
                            stages=t)) for name, (r, t) in cases.items()}, rounds, 0)  # fmt: skip
        for name, v in sec.items():
            ms[name].append(1e3 * p50(v))
            rel[name].append(p50(v) / p50(sec[TODAY]))
    loaders = {f"SA1BLoader threads=2, stats {s}": SA1BLoader(ds, 8, threads=2, sampler=positions,
               stats=s == "on") for s in ("on", "off")}  # fmt: skip
    lsec = side_by_side({k: (lambda lo=lo: [None for _ in lo]) for k, lo in loaders.items()},
                        2 * rounds)  # fmt: skip
    on = next(iter(lsec.values()))
    record = StageTimes()
    t0 = time.perf_counter_ns()
    for _ in range(10_000):  # what one sample records: a stopwatch and five laps
        lap = record.start()
        for k in range(READ, READ + 5):
            lap(k)
    lap_us = (time.perf_counter_ns() - t0) / 1e3 / 10_000
    stage = {name: t.stats().stages["prompts"].ms_per_sample for name, (_, t) in cases.items()}
    what = f"image {size}, up to 64 masks at {m}"
    rows = [row(f"training_sample, {name}", v, "ms/sample", "ref" if name == TODAY else
                f"{p50(rel[name]):.3f}x today", what) for name, v in ms.items()]  # fmt: skip
    rows += [row(f"{name} / today's, per sample", rel[name], "x", what="median of per-sample "
                 "ratios") for name in PROMPTS if name != TODAY]  # fmt: skip
    rows += [row(f"prompts stage, {name}", [stage[name]], "ms/sample", what="the loader's own "
                 "stage time") for name in PROMPTS]  # fmt: skip
    rows += [row(name, [n / t for t in v], "samples/s", "ref" if v is on else
                 f"{x(ratio(on, v))} stats on", "batch 8")
             for name, v in lsec.items()]  # fmt: skip
    rows.append(row("recording one sample's stage times", [lap_us], "µs", "", "StageTimes.start()"
                    " + 5 laps, 10,000 times"))  # fmt: skip
    notes = [f"{n} samples, each run {rounds} times per recipe in interleaved rounds (one "
             f"thread, this process); {2 * rounds} interleaved epochs of each loader; the "
             "loader's own summary after its rounds: "
             + next(iter(loaders.values())).stats().summary()]  # fmt: skip
    return Result(rows, notes)

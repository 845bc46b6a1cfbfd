"""SAM-style prompts drawn from the runs (3 points + noisy boxes, and 2 box negatives) against
today's recipe, per sample; and what stage statistics cost (SA1BLoader stats on vs off, and
the recording calls alone)."""

from __future__ import annotations

import time

from harness import Ctx, Result, p50, question, ratio, row, side_by_side, spread, x

from sa1b_pack.torch import SA1BDataset, SA1BLoader
from sa1b_pack.train.recipe import Recipe, training_sample
from sa1b_pack.train.stats import READ, StageTimes

PROMPTS = {"today's recipe (stored point, exact boxes)": {},
           "3 points + noisy boxes": dict(points_per_mask=3, box_noise=0.1),
           "3 points + 2 box negatives + noisy boxes": dict(points_per_mask=3, negative_points=2,
                                                            box_noise=0.1)}  # fmt: skip
TODAY, SAM = list(PROMPTS)[:2]


@question("prompts", "What do SAM-style prompts from the runs cost per sample, and what do the "
          "loader's stage statistics cost?")  # fmt: skip
def prompts(ctx: Ctx) -> Result:
    size, m = ctx.size(1024, 64), ctx.size(256, 16)
    base = dict(image_size=size, mask_size=m, max_masks=64, min_predicted_iou=0.88,
                min_stability_score=0.95, min_area=100, seed=ctx.seed)  # fmt: skip
    ds = SA1BDataset(ctx.store, **base)
    positions = spread(len(ds), ctx.size(48, 6, 96), ctx.seed)
    picks = [int(ds.index[p]) for p in positions]
    n, rounds = len(picks), ctx.size(5, 1)
    cases = {name: (Recipe(**base, **extra), StageTimes()) for name, extra in PROMPTS.items()}
    for recipe, _ in cases.values():  # untimed: kernels loaded, pages warm
        for i in picks:
            training_sample(ds.store, i, recipe)
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
    on, off = lsec.values()
    record = StageTimes()
    t0 = time.perf_counter_ns()
    for _ in range(10_000):  # what one sample records: a stopwatch and five laps
        lap = record.start()
        for k in range(READ, READ + 5):
            lap(k)
    lap_us = (time.perf_counter_ns() - t0) / 1e3 / 10_000
    stage = {name: t.stats().stages["prompts"].ms_per_sample for name, (_, t) in cases.items()}
    rows = [row(f"training_sample, {name}", v, "ms/sample", "ref" if name == TODAY else
                f"{p50(rel[name]):.3f}x today", f"image {size}, up to 64 masks at {m}; prompts "
                f"stage {stage[name]:.3f} ms/sample") for name, v in ms.items()]  # fmt: skip
    rows += [row(name, [n / t for t in v], "samples/s", "ref" if v is on else
                 f"{x(ratio(on, v))} stats on", "batch 8")
             for name, v in lsec.items()]  # fmt: skip
    share = lap_us / 1e3 / p50(ms[TODAY])
    rows.append(row("recording one sample's stage times", [lap_us], "µs", f"{share:.3%} of a "
                    "sample", "StageTimes.start() + 5 laps, 10,000 times"))  # fmt: skip
    cost, overhead, three = p50(rel[SAM]), ratio(on, off), list(PROMPTS)[2]
    reading = [
        f"3 points + noisy boxes cost {cost:.3f}x today's time per sample (median of per-sample "
        f"ratios; target <= 1.05x: {'met' if cost <= 1.05 else 'NOT met'}); by the prompts "
        f"stage's own time they add {stage[SAM] - stage[TODAY]:.3f} ms, "
        f"{(stage[SAM] - stage[TODAY]) / p50(ms[TODAY]):.2%} of today's sample. With 2 box "
        f"negatives too: {p50(rel[three]):.3f}x, +{stage[three] - stage[TODAY]:.3f} ms.",
        f"SA1BLoader with stats on takes {overhead:.3f}x the time of stats off over {2 * rounds} "
        f"interleaved epochs (target <= 1.01x: {'met' if overhead <= 1.01 else 'NOT met'}); "
        f"the recording itself is {lap_us:.2f} µs per sample, {share:.3%} of a sample.",
    ]
    notes = [f"{n} samples, each run {rounds} times per recipe in interleaved rounds (one "
             f"thread, this process); {2 * rounds} interleaved epochs of each loader; the "
             "loader's own summary after its rounds: "
             + next(iter(loaders.values())).stats().summary()]  # fmt: skip
    return Result(rows, reading, notes)

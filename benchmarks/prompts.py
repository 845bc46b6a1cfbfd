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
    n, rounds = len(picks), ctx.size(7, 1)
    recipes = {name: Recipe(**base, **extra) for name, extra in PROMPTS.items()}
    times = {name: StageTimes() for name in PROMPTS}

    def samples(name: str) -> None:
        for i in picks:
            training_sample(ds.store, i, recipes[name], stages=times[name])

    for name in PROMPTS:  # untimed: kernels loaded, pages warm; the stage times start after
        samples(name)
        times[name].stats(reset=True)
    sec = side_by_side({name: (lambda name=name: samples(name)) for name in PROMPTS}, rounds, 0)
    loaders = {f"SA1BLoader threads=2, stats {s}": SA1BLoader(ds, 8, threads=2, sampler=positions,
               stats=s == "on") for s in ("on", "off")}  # fmt: skip
    lsec = side_by_side({k: (lambda lo=lo: [None for _ in lo]) for k, lo in loaders.items()},
                        2 * rounds)  # fmt: skip
    on, off = lsec.values()
    record = StageTimes()
    t0 = time.perf_counter_ns()
    for _ in range(10_000):  # what one sample records: a stopwatch and five laps
        lap = record.start()
        for stage in range(READ, READ + 5):
            lap(stage)
    lap_us = (time.perf_counter_ns() - t0) / 1e3 / 10_000
    rows = [row(f"training_sample, {name}", [1e3 * t / n for t in v], "ms/sample",
                "ref" if name == TODAY else f"{x(ratio(v, sec[TODAY]))} today",
                f"image {size}, up to 64 masks at {m}; prompts stage "
                f"{times[name].stats().stages['prompts'].ms_per_sample:.3f} ms/sample")
            for name, v in sec.items()]  # fmt: skip
    rows += [row(name, [n / t for t in v], "samples/s", "ref" if v is on else
                 f"{x(ratio(on, v))} stats on", "batch 8")
             for name, v in lsec.items()]  # fmt: skip
    share = lap_us / (1e3 * p50(sec[TODAY]) / n)
    rows.append(row("recording one sample's stage times", [lap_us], "µs", f"{share:.3%} of a "
                    "sample", "StageTimes.start() + 5 laps, 10,000 times"))  # fmt: skip
    cost, overhead = ratio(sec[SAM], sec[TODAY]), ratio(on, off)
    reading = [
        f"3 points + noisy boxes cost {cost:.3f}x today's time per sample (target <= 1.05x: "
        f"{'met' if cost <= 1.05 else 'NOT met'}); with 2 box negatives too "
        f"{ratio(sec[list(PROMPTS)[2]], sec[TODAY]):.3f}x.",
        f"SA1BLoader with stats on takes {overhead:.3f}x the time of stats off over {2 * rounds} "
        f"interleaved epochs (target <= 1.01x: {'met' if overhead <= 1.01 else 'NOT met'}); "
        f"the recording itself is {lap_us:.2f} µs per sample, {share:.3%} of a sample.",
    ]
    notes = [f"{n} samples; {rounds} interleaved rounds of each recipe (one thread, this "
             f"process), {2 * rounds} of each loader; the loader's own summary after its rounds: "
             + next(iter(loaders.values())).stats().summary()]  # fmt: skip
    return Result(rows, reading, notes)

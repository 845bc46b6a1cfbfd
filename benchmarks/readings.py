"""Reading lines and the limits table, computed from the rows the tables show.

run.py and report.py call these on a question's rows (the JSON's), so a conclusion can only
quote what its table holds: the p50 column, converted between units. A sentence whose rows a
run lacks (a smoke run without some case, a JSON older than a row) is left out, not guessed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from harness import row, x

FLOOR = "floor: decode_image only"
FULL, OURS = "full-res sample: PIL + json + pycocotools", "full-res sample: image() + masks(out=)"
TO_BASE = {"GB/s": 1e9, "MB/s": 1e6, "ms": 1e-3, "µs": 1e-6, "ms/sample": 1e-3}
LIMITS = (  # (measure, (question, row), (question, row)): a ratio of two p50s of the same run
    ("pack, 1 job / cold sequential read", ("pack", "pack, 1 job, MB/s of tar"),
     ("limits", "sequential read, cold")),
    ("training recipe / bare JPEG decode at 1/2 DCT",
     ("prompts", "training_sample, today's recipe (stored point, exact boxes)"),
     ("limits", "JPEG decode, 1/2 DCT")),
)  # fmt: skip


class Rows:
    """A question's rows by measure; ``t(m)`` is the p50 shown, ``t.base(m)`` in base units
    (bytes/s, seconds); a missing measure raises KeyError, which drops its sentence."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.by = {r["measure"]: r for r in rows}

    def __call__(self, measure: str) -> float:
        return float(self.by[measure]["p50"])

    def base(self, measure: str) -> float:
        return self(measure) * TO_BASE.get(self.by[measure]["unit"], 1.0)

    def ending(self, suffix: str) -> list[str]:
        return [m for m in self.by if m.endswith(suffix)]


def sentences(*parts: Callable[[], str]) -> str:
    """The parts whose rows exist, joined; '' when none."""
    out = []
    for part in parts:
        try:
            out.append(part())
        except (KeyError, IndexError, ValueError, ZeroDivisionError):
            continue
    return " ".join(out)


def masks(t: Rows) -> list[str]:
    ours, coco = "full size, ours masks(out=)", "full size, pycocotools -> (N,H,W)"
    written, memset = "full size, ours, output written", "memset fill(1), same bytes"
    resized = [m for m in t.ending(", ours") if t.by[m]["unit"] == "ms/sample" and "iou" not in m]
    return [sentences(
        lambda: f"Full-size decode gives {x(t(ours) / t(coco))} the masks/s of pycocotools;",
        lambda: f"it writes {t(written):.1f} GB/s, {100 * t(written) / t(memset):.0f}% of a "
                "memset of the same bytes;",
        lambda: "sampled and resized, it runs at " + " and ".join(
            f"{x(t(m.replace(', ours', ', ref')) / t(m))} the reference's speed "
            f"({m.removesuffix(', ours')})" for m in resized) + ".",
    )]  # fmt: skip


def loader(t: Rows) -> list[str]:
    def rate(name: str) -> float:
        return t(("SA1BLoader, " if "threads" in name else "SA1BDataset, ") + name)

    teacher = "added by the teacher array, "
    added = [m.removeprefix(teacher) for m in t.by if m.startswith(teacher)]
    out = [sentences(
        lambda: f"With 0 workers a sample takes {x(1e3 / rate('W=0') / t(FLOOR))} the time of its "
                "decode + resize alone;",
        lambda: f"2 fork workers give {x(rate('W=2 fork') / rate('W=0'))} the samples/s of 0;",
        lambda: f"the pre-resized store {x(rate('pre-resized, W=0') / rate('W=0'))} at 0;",
        lambda: f"SA1BLoader with 2 threads gives {x(rate('threads=2') / rate('threads=1'))} 1 "
                f"thread and {x(rate('threads=2') / rate('W=2 fork'))} DataLoader's 2 fork "
                "workers.",
    ), sentences(lambda: "A 2 MiB teacher array per sample adds " + ", ".join(
        f"{t(teacher + b):.2f} ms per sample at {b} ({x(rate(b) / rate('+ teacher 2 MiB, ' + b))}"
        " its time)" for b in added) + ".")]  # fmt: skip
    return [line for line in out if line]


def peers(t: Rows) -> list[str]:
    ours = [m for m in t.by if m.startswith("sa1b_pack, ")]
    others = [m for m in t.ending(" workers") if m not in ours]
    speed = [t(f"sa1b_pack, {m.rsplit(', ', 1)[1]}") / t(m) for m in others] if ours else []
    w0 = [t(m) for m in others if m.endswith(", 0 workers")]
    return [sentences(
        lambda: f"sa1b_pack delivers {x(min(speed))}-{x(max(speed))} the samples/s of each peer "
                "at 0 and 2 workers.",
        lambda: f"The peers spend {t('peers, 0 workers: pycocotools share of a sample'):.0f}% of "
                "a sample in pycocotools decoding every mask.",
        lambda: f"How their bytes arrive moves the peers by {x(max(w0) / min(w0))} at most "
        "(0 workers).",
        lambda: f"A full-resolution sample (image and every mask) reads {x(t(FULL) / t(OURS))} "
                "faster than with PIL + json + pycocotools.",
    )]  # fmt: skip


def scale(t: Rows) -> list[str]:
    local = "training recipe, local"
    return [sentences(
        lambda: "On the slow S3: " + ", ".join(f"{x(t(f'training recipe, S3, {c}') / t(local))} "
                f"local {c}" for c in ("no cache", "cache cold", "cache warm")) + ".",
        lambda: "2 nodes with a cache each download " + ", ".join(f"{t(m):.2f}x the store in "
                + m.split(", ")[2].removesuffix(": cluster download") for m in
                t.ending(": cluster download")) + " (one epoch).",
    )]  # fmt: skip


def startup(t: Rows) -> list[str]:
    first = next(m for m in t.by if m.startswith("SA1BDataset start, first build"))
    share = t.base("SA1BDataset start, persisted index") / t.base(first)
    sa1b = t("projected start at SA-1B, persisted index")
    return [f"A start from the persisted index takes {share:.1%} of the first build "
            f"({'within' if share <= 0.10 else 'OVER'} the 10% aim); projected at SA-1B: "
            f"{sa1b:.2f} s ({'under' if sa1b < 1 else 'OVER'} 1 s)."]  # fmt: skip


def cluster(t: Rows) -> list[str]:
    ours, blocks = (max(t(m) for m in t.ending(f" ranks, {o}")) for o in ("nodes", "blocks"))
    padding = t(next(m for m in t.by if m.startswith("padding of the node-aware order")))
    return [f"Node-aware order: the cluster downloads at most {ours:.2f}x the store per epoch "
            f"({'within' if ours <= 1.05 else 'OVER'} the 1.05x aim), the blocks order up to "
            f"{blocks:.1f}x; padding at most {padding:.2f}% of the steps."]  # fmt: skip


def prompts(t: Rows) -> list[str]:
    today, sam, three = "today's recipe (stored point, exact boxes)", "3 points + noisy boxes", \
        "3 points + 2 box negatives + noisy boxes"  # fmt: skip
    stage = {k: t(f"prompts stage, {k}") for k in (today, sam, three)}
    cost, more = (t(f"{k} / today's, per sample") for k in (sam, three))
    on = "SA1BLoader threads=2, stats on"
    lap, overhead = t("recording one sample's stage times"), t(on.replace("on", "off")) / t(on)
    return [f"{sam} cost {cost:.3f}x today's time per sample (target <= 1.05x: "
            f"{'met' if cost <= 1.05 else 'NOT met'}); the prompts stage adds "
            f"{stage[sam] - stage[today]:.3f} ms. With 2 box negatives too: "
            f"{more:.3f}x, +{stage[three] - stage[today]:.3f} ms.",
            f"SA1BLoader with stats on takes {overhead:.3f}x the time of stats off (target "
            f"<= 1.01x: {'met' if overhead <= 1.01 else 'NOT met'}); the recording itself is "
            f"{lap:.2f} µs per sample, {lap / 1e3 / t(f'training_sample, {today}'):.3%} of a "
            "sample."]  # fmt: skip


def gpu(t: Rows) -> list[str]:
    bad, fields = t("masks that differ from the CPU loader's"), t("other fields or padding that "
                                                                 "differ")  # fmt: skip
    (ours,) = (m for m in t.ending(", batch 64") if m.startswith("device="))
    rate, cpu = t(ours), t(ours.replace("device=", "CPU time per sample, device="))
    base = next(m for m in t.ending(", batch 64") if m.startswith("CPU, "))
    return [f"{'Exact' if bad == fields == 0 else 'NOT exact'}: {bad:.0f} masks and "
            f"{fields:.0f} other fields differ from the CPU loader's; images differ by "
            f"{t('image, mean absolute difference'):.2f} levels (median image).", sentences(
            lambda: f"At batch 64, {rate:,.0f} samples/s ({x(rate / t(base))} the threaded CPU "
                    f"loader) at {cpu:.2f} ms of CPU per sample (goal: 1,000 samples/s under 1 "
                    f"ms: {'met' if rate >= 1000 and cpu < 1 else 'NOT met'}).",
            lambda: f"GPU memory grows {t('GPU memory growth after batch 100'):.1f} MiB after "
                    "batch 100.")]  # fmt: skip


READINGS = {"masks": masks, "loader": loader, "peers": peers, "scale": scale,
            "cluster": cluster, "startup": startup, "prompts": prompts, "gpu": gpu}  # fmt: skip


def reading(key: str, rows: list[dict[str, Any]]) -> list[str]:
    """The reading lines of question ``key``, from its rows alone."""
    try:
        return [line for line in READINGS[key](Rows(rows)) if line] if key in READINGS else []
    except (KeyError, IndexError, ValueError):  # rows a sentence needs before its guard
        return []


def limits_rows(parts: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Our numbers against this machine's limits: ratios of p50s shown in the other tables."""
    tables = {k: Rows(p["rows"]) for k, p in parts.items()}
    out = []
    for name, (qa, a), (qb, b) in LIMITS:
        if qa in tables and qb in tables and a in tables[qa].by and b in tables[qb].by:
            ra, rb = tables[qa].by[a], tables[qb].by[b]
            what = f"{ra['p50']:.3g} {ra['unit']} against {rb['p50']:.3g} {rb['unit']}"
            out.append(row(name, [tables[qa].base(a) / tables[qb].base(b)], "x", what=what))
    return out

"""Reading lines and the limits table, computed from the rows the tables show.

run.py and report.py call these on a question's rows (the JSON's), so a conclusion can only
quote what its table holds: the p50 column, converted between units. A sentence whose rows a
run lacks (a smoke run without some case, a JSON older than a row) is left out, not guessed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from harness import format_cell, row, x

FLOOR = "floor: decode_image only"
FULL, OURS = "full-res sample: PIL + json + pycocotools", "full-res sample: image() + masks(out=)"
TO_BASE = {"GB/s": 1e9, "MB/s": 1e6, "ms": 1e-3, "µs": 1e-6, "ms/sample": 1e-3}
LIMITS = (  # (measure, (question, row), (question, row)): a ratio of two p50s of the same run
    ("pack, 1 job / cold sequential read", ("pack", "pack, 1 job, MB/s of tar"),
     ("limits", "sequential read, cold")),
    ("training recipe / bare JPEG decode at 1/2 DCT", ("access", "training recipe, random, warm"),
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


def access(t: Rows) -> list[str]:
    names = [m.removesuffix(", sequential, warm") for m in t.ending(", sequential, warm")]
    spread = [t.base(f"{n}, random, warm") / t.base(f"{n}, sequential, warm") for n in names]
    cold = ", ".join(f"{1e3 * (t.base(f'{n}, random, cold') - t.base(f'{n}, random, warm')):+.2f}"
                     f" ms ({n})" for n in names)  # fmt: skip
    return [f"Random order costs {min(spread):.2f}x-{max(spread):.2f}x sequential's time warm. "
            f"A cold page cache adds {cold} per random sample."]  # fmt: skip


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


def memory(t: Rows) -> list[str]:
    growth = [m for m in t.by if " RSS growth epoch 1 -> " in m]
    last = int(growth[0].rsplit(" ", 1)[1])

    def worst(fixed: bool) -> str:
        """The largest p50 growth among the cases with (or without) the fixed threshold."""
        top = max((m for m in growth if ("mmap threshold" in m) == fixed), key=t)
        case = top.split(" RSS growth")[0]  # "<case>: <process>,"
        rss = [t(f"{case} RSS after epoch {e}") for e in (1, last)]
        name, proc = case[:-1].split(": ")
        return (
            f"{'+' if t(top) >= 0 else ''}{format_cell(t(top))}% ({proc} of {name}: "
            f"{(rss[1] - rss[0]) / (last - 1):+.1f} MB of RSS per epoch)"
        )

    def speed() -> str:
        fixed = next(m for m in t.ending(": epoch") if "mmap threshold" in m)
        return f", at {x(t(fixed) / t(fixed.split(', mmap')[0] + ': epoch'))} the samples/s."

    return [sentences(
        lambda: f"From epoch 1 to epoch {last} the largest RSS growth of any kind of process "
                f"(median over its processes) is {worst(False)}.",
        lambda: f"With glibc's mmap threshold fixed at 1 MB in the workers: {worst(True)}"
                + speed(),
    )]  # fmt: skip


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
    fds, wfds = "  process: open descriptors / part maps / RSS, ", "  per worker: descriptors / "
    read, local = "read every sample, {} order", "training recipe, local"
    return [sentences(
        lambda: f"Whatever the part count, {t(fds + 'uniform'):.0f} open descriptors in the "
                f"reading process and {t(wfds + 'part maps / RSS, uniform'):.0f} per worker.",
        lambda: f"The blocks order reads {x(t(read.format('blocks')) / t(read.format('uniform')))}"
                " as fast as uniform (every uniform read opens a part: first touch "
                f"{t('first touch of a small part'):.2f} ms).",
        lambda: "On the slow S3: " + ", ".join(f"{x(t(f'training recipe, S3, {c}') / t(local))} "
                f"local {c}" for c in ("no cache", "cache cold", "cache warm")) + ".",
    )]  # fmt: skip


READINGS = {"access": access, "masks": masks, "loader": loader, "memory": memory,
            "peers": peers, "scale": scale}  # fmt: skip


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

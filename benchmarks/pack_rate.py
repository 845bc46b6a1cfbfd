"""Pack rate with 1 job and one per core, peak RSS, and the store's bytes against the tars'."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

from harness import BENCH_DIR, Ctx, Result, p50, question, ratio, row, x

from sa1b_pack.format.files import COUNTS_PAYLOAD, JPEG_PAYLOAD, PARTS_DIR

MB = 1e6


def longer(tars: list[Path], repeats: int, folder: Path) -> list[Path]:
    """Each shard with its samples ``repeats`` times over (image ids renumbered, in the JSON
    too), so a shard's fixed costs (tables, fsyncs, manifest commit) weigh about as little as
    in a real ~10 GB shard; a hard link when ``repeats`` is 1."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for tar in tars:
        path = folder / tar.name
        if repeats == 1:
            os.link(tar, path)
        else:
            with tarfile.open(tar) as src, tarfile.open(path, "w") as dst:
                members = [(m, src.extractfile(m).read()) for m in src if m.isfile()]
                for r in range(repeats):
                    for member, data in members:
                        dst.addfile(*renumbered(member, data, r))
        out.append(path)
    return out


def renumbered(member: tarfile.TarInfo, data: bytes, r: int) -> tuple[tarfile.TarInfo, Any]:
    stem, kind = member.name.rsplit(".", 1)
    new_id = int(stem.rsplit("_", 1)[1]) + r * 10_000_000
    if kind == "json":
        doc = json.loads(data)
        doc["image"].update(image_id=new_id, file_name=f"sa_{new_id}.jpg")
        data = json.dumps(doc).encode()
    info = tarfile.TarInfo(f"sa_{new_id}.{kind}")
    info.size = len(data)
    return info, io.BytesIO(data)


# The last commit before issue 14 vectorised pack-time validation: timed beside the current code.
BEFORE = "d376beb"


class Packer:
    """A persistent packing process (benchmarks/pack_child.py) running the code at ``code``."""

    def __init__(self, code: Path) -> None:
        env = {**os.environ, "PYTHONPATH": str(code)}
        script = Path(__file__).with_name("pack_child.py")
        self.proc = subprocess.Popen(
            [sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True, env=env, cwd=code,
        )  # fmt: skip

    def ask(self, **question: Any) -> dict:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(question) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"pack child exited ({self.proc.wait()})")
        return json.loads(line)

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait()


def old_code(ref: str, folder: Path) -> Path | None:
    """``sa1b_pack`` as of ``ref``, extracted from this checkout's git history; None without it."""
    repo = BENCH_DIR.parent
    try:
        archive = subprocess.run(["git", "-C", str(repo), "archive", ref, "sa1b_pack"],
                                 capture_output=True, check=True).stdout  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return None
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return folder


def interleaved(cases: dict[str, tuple[Packer, int]], tars: list[Path], work: Path,
                rounds: int) -> dict[str, list[float]]:  # fmt: skip
    """Seconds per pack of each case (its packer, its job count); one of each per round,
    rotating order, after one untimed round."""
    names, made = list(cases), iter(range(1 << 30))
    out: dict[str, list[float]] = {name: [] for name in names}
    indices = [int(p.stem[3:]) for p in tars]
    for r in range(rounds + 1):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            packer, jobs = cases[name]
            seconds = packer.ask(src=str(tars[0].parent), dst=str(work / f"p{next(made)}"),
                                 indices=indices, jobs=jobs)["seconds"]  # fmt: skip
            if r:
                out[name].append(seconds)
    return out


@question("pack", "How fast does packing go, per core and with every core, in how much memory, "
          "into how many bytes?")  # fmt: skip
def pack_rate(ctx: Ctx) -> Result:
    jobs, copies, rounds = os.cpu_count() or 1, ctx.size(4, 1, 1), ctx.size(5, 1, 1)
    tars = longer(ctx.tars, copies, ctx.work / "pack-shards")
    current = Packer(BENCH_DIR.parent)
    before_code = old_code(BEFORE, ctx.work / "pack-before")
    before = Packer(before_code) if before_code else None
    skipped = [] if before else [f"the packer of {BEFORE}: that commit is not in this "
                                 "checkout's history (a shallow clone?)"]  # fmt: skip
    cases = {"1 job": (current, 1), f"{jobs} jobs": (current, jobs)}
    if before:
        cases[f"1 job, {BEFORE}"] = (before, 1)
    times = interleaved(cases, tars, ctx.work / "pack-out", rounds)
    rss = current.ask(rss=True)["rss_mb"]
    rss_before = before.ask(rss=True)["rss_mb"][0] if before else None
    for packer in (current, before):
        if packer:
            packer.close()
    tar_mb = sum(p.stat().st_size for p in tars) / MB
    shutil.rmtree(ctx.work / "pack-shards")
    from sa1b_pack import open_store

    images = len(open_store(ctx.store)) * copies
    one, many = ([tar_mb / t for t in times[k]] for k in ("1 job", f"{jobs} jobs"))
    files = [p for p in ctx.store.rglob("*") if p.is_file()]
    total = sum(p.stat().st_size for p in files)
    kinds = {name: sum(p.stat().st_size for p in files if p.name == name)
             for name in (JPEG_PAYLOAD, COUNTS_PAYLOAD)}  # fmt: skip
    tables = sum(p.stat().st_size for p in files if PARTS_DIR in p.parts) - sum(kinds.values())
    split = ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in (*kinds.items(),
                      ("tables", tables)))  # fmt: skip
    src_bytes = sum(p.stat().st_size for p in ctx.tars)
    old = [tar_mb / t for t in times.get(f"1 job, {BEFORE}", [])]
    rows = [
        row("pack, 1 job, MB/s of tar", one, "MB/s", "ref",
            f"{images * p50(one) / tar_mb:.0f} images/s; {images} images per pack"),
        row(f"pack, {jobs} jobs, MB/s of tar", many, "MB/s", f"{x(ratio(many, one))} 1 job",
            "one shard per loky worker"),
        *([row(f"pack, 1 job, code of {BEFORE}", old, "MB/s", f"1 job is {x(ratio(one, old))} "
               "this", "before pack-time validation was vectorised (issue 14), same shards, "
               "same rounds")] if old else []),
        row("peak RSS, packing process", [rss[0]], "MB", what="1-job packs run in it"),
        *([row(f"peak RSS, packing process, code of {BEFORE}", [rss_before], "MB",
               what="its 1-job packs")] if rss_before else []),
        row(f"peak RSS, largest worker ({jobs} jobs)", [rss[1]], "MB",
            what="interpreter and imports included"),
        row("store bytes / tar bytes", [total / src_bytes], "ratio", what=split + " of the store"),
    ]  # fmt: skip
    notes = [f"{len(tars)} shards, each the samples of one bench shard {copies} "
             f"times over (renumbered), {tar_mb:.0f} MB of tar per pack; {rounds} interleaved "
             "rounds after 1 untimed, each code in its own persistent process "
             "(benchmarks/pack_child.py) timing only the pack call; peak RSS from getrusage "
             "(self, and children after the workers exit)."]  # fmt: skip
    return Result(rows, notes, {"mb_s": p50(one)}, skipped)

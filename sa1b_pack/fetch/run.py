"""Fetch SA-1B from Meta's links file: parallel resumable downloads, packed as they land.

Downloader threads (``jobs``) hand finished tars to one packing thread, so downloading and
packing overlap. A tar is deleted (``delete_tars``) only after its shard is listed in the
manifest and every part file hashes to its manifest entry; with deletion, at most
``jobs + pack_jobs + 1`` fetched tars are on disk at once. A re-run skips committed shards
and complete tars and resumes ``.part`` files: interrupting loses at most the chunk in flight.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..errors import ConfigError
from ..format.files import MANIFEST
from ..progress import progress_bar
from ..source.shards import shard_name
from ..store.manifest import check_files, read_manifest
from .disk import STORE_PER_TAR_BYTE, TYPICAL_SHARD_BYTES, check_disk
from .download import EXPIRED_HINT, DownloadError, Http, Log, Stopped, download, probe
from .links import LINKS_PAGE, check_expiry, read_links
from .report import Bars, FetchReport

PROBE_THREADS = 16


@dataclass
class _Run:
    """What the downloader threads and the packing thread share."""

    links: dict[int, str]
    src: Path
    store: Path | None
    http: Http
    log: Log
    pack_options: dict[str, Any]
    delete: bool
    jobs: int
    pack_jobs: int
    report: FetchReport = field(default_factory=FetchReport)
    stop: threading.Event = field(default_factory=threading.Event)
    inbox: queue.SimpleQueue[int | None] = field(default_factory=queue.SimpleQueue)
    error: BaseException | None = None  # what stopped the packer

    def __post_init__(self) -> None:
        self.max_tars = self.jobs + self.pack_jobs + 1 if self.delete else None
        self.slots = threading.BoundedSemaphore(self.max_tars) if self.max_tars else None
        self.held: set[int] = set()  # shards whose tar holds a slot

    def tar(self, index: int) -> Path:
        return self.src / f"{shard_name(index)}.tar"

    def get(self, index: int, size: int | None, bars: Bars) -> None:
        """Downloader thread: wait for a slot, fetch, hand the tar to the packer."""
        while self.slots is not None and not self.slots.acquire(timeout=0.2):
            if self.stop.is_set():
                raise Stopped
        if self.slots is not None:
            self.held.add(index)
        try:
            with bars.file(shard_name(index), size) as update:
                url = self.links[index]
                download(url, self.tar(index), self.http, self.stop, self.log, size, update)
        except DownloadError as exc:
            self.fail(exc)
            self.free(index)
            return
        self.report.downloaded.append(shard_name(index))
        if self.store is not None:
            self.inbox.put(index)

    def fail(self, exc: DownloadError) -> None:
        self.report.failed[exc.name] = exc.reason
        if exc.expired:
            self.report.expired.append(exc.name)
        self.log.say(f"FAILED {exc}")

    def free(self, index: int) -> None:
        if index in self.held:
            self.held.discard(index)
            self.slots.release()  # type: ignore[union-attr]

    def pack_loop(self, bar: tqdm) -> None:
        """Packing thread: one Packer for the whole run (one lock, one manifest read, one
        worker pool); packs what has landed, up to ``pack_jobs`` shards at a time."""
        from ..write.packer import Packer  # numba & co. only when packing

        assert self.store is not None
        done = False
        try:
            options = {"jobs": self.pack_jobs, "progress": False, **self.pack_options}
            with Packer(self.store, **options) as packer:
                while not done:
                    batch = [self.inbox.get()]
                    while len(batch) < self.pack_jobs and not self.inbox.empty():
                        batch.append(self.inbox.get())
                    done = None in batch
                    batch = [i for i in batch if i is not None]
                    result = packer.pack({i: str(self.tar(i)) for i in batch})
                    for index in batch:
                        self.after_pack(index, result, packer)
                        bar.update(1)
        except BaseException as exc:  # a locked or broken store: the run stops
            self.error = exc
            self.stop.set()

    def after_pack(self, index: int, result: Any, packer: Any) -> None:
        """Check a committed shard's files against the manifest, then delete its tar if
        asked; keep it on any doubt."""
        name, tar = shard_name(index), self.tar(index)
        error = result.failed.get(name)
        entry = packer.manifest["shards"].get(name)
        if error is not None:
            problem = error
        elif entry is None:
            problem = f"{name}: not listed in the manifest after packing"
        else:
            problem = "; ".join(check_files(packer.storage, name, entry)) or None
        if problem is not None:
            self.report.pack_failed[name] = f"{problem}; {tar.name} kept"
            if error is None:  # the packer reports its own failures
                self.log.say(f"FAILED {problem}")
            self.log.say(f"{tar.name} kept: delete it to fetch it again")
        else:
            existing = name in result.skipped_existing
            (self.report.already_packed if existing else self.report.packed).append(name)
            if self.delete:
                tar.unlink(missing_ok=True)
                self.report.deleted.append(name)
        self.free(index)

    def go(self, ready: list[int], todo: dict[int, int | None], bars: Bars) -> FetchReport:
        """Downloads on ``jobs`` threads, packing on one more, until all is done or stopped."""
        shown = bars.enabled and self.store is not None
        bar = progress_bar(
            total=len(ready) + len(todo), desc="packed", unit="shard", position=1, enabled=shown
        )
        packer = None
        if self.store is not None:
            for index in ready:
                self.inbox.put(index)
            packer = threading.Thread(target=self.pack_loop, args=(bar,), daemon=True)
            packer.start()  # a daemon: Ctrl-C may kill it mid-pack, and packing is crash-safe
        pool = ThreadPoolExecutor(max(1, self.jobs))
        try:
            for future in [pool.submit(self.get, i, todo[i], bars) for i in sorted(todo)]:
                with contextlib.suppress(Stopped):
                    future.result()
            if packer is not None:
                self.inbox.put(None)
                while packer.is_alive():  # join in slices: Ctrl-C still lands
                    packer.join(0.2)
        except BaseException:
            self.stop.set()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            bars.close()
            bar.close()
        if self.error is not None:
            raise self.error
        report = self.report
        for value in vars(report).values():  # threads finish in any order
            if isinstance(value, list):
                value.sort()
        report.failed = dict(sorted(report.failed.items()))
        report.pack_failed = dict(sorted(report.pack_failed.items()))
        if self.report.expired:
            expired = ", ".join(self.report.expired)
            self.log.say(f"{EXPIRED_HINT} ({LINKS_PAGE}) and re-run for {expired}")
        return self.report


def _committed(run: _Run) -> set[str]:
    """Shards the destination store already holds (none without one)."""
    if run.store is not None and (run.store / MANIFEST).exists():
        return set(read_manifest(run.store)["shards"])
    return set()


def _plan(run: _Run, shards: list[int]) -> tuple[list[int], dict[int, int | None], list[int]]:
    """(tars on disk to pack or delete, {shard: size} to download, sizes of the tars on disk
    to pack): probes shards not committed, moves aside tars not the server's size."""
    committed = _committed(run)
    done = [i for i in shards if shard_name(i) in committed]
    ready = [i for i in done if run.delete and run.tar(i).exists()]  # verify, then delete
    run.report.already_packed += [shard_name(i) for i in done if i not in ready]
    probe_these = [i for i in shards if shard_name(i) not in committed]

    def one(index: int) -> int | DownloadError | None:
        try:
            return probe(run.links[index], shard_name(index), run.http, run.stop, run.log)
        except DownloadError as exc:
            return exc

    pool = ThreadPoolExecutor(min(PROBE_THREADS, max(1, len(probe_these))))
    try:
        sizes = dict(zip(probe_these, pool.map(one, probe_these), strict=True))
    except BaseException:  # Ctrl-C: do not wait for a thousand probes
        run.stop.set()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    todo: dict[int, int | None] = {}
    for index, size in sizes.items():
        tar = run.tar(index)
        on_disk = tar.stat().st_size if tar.exists() else None
        if on_disk is not None and (not isinstance(size, int) or on_disk == size):
            ready.append(index)  # only a complete download gets the final name
            run.report.present.append(shard_name(index))
        elif isinstance(size, DownloadError):
            run.fail(size)
        else:
            if on_disk is not None:
                run.log.say(
                    f"{tar.name}: {on_disk:,} bytes, not the {size:,} the server "
                    f"states: moved to {tar.name}.bad, fetching it again"
                )
                os.replace(tar, f"{tar}.bad")
            todo[index] = size
    to_pack = [run.tar(i).stat().st_size for i in ready if shard_name(i) not in committed]
    return ready, todo, to_pack


def fetch(
    links_file: str | os.PathLike,
    src: str | os.PathLike,
    shards: list[int],
    *,
    store: str | os.PathLike | None = None,
    delete_tars: bool = False,
    jobs: int = 4,
    pack_jobs: int = 1,
    http: Http | None = None,
    force: bool = False,
    image_longest: int | None = None,
    on_error: str = "fail",
    progress: bool = True,
    log: Log | None = None,
) -> FetchReport:
    """Download shards into ``src`` and, with ``store``, pack each into that store as it lands.

    Failed shards are reported and the rest go on. Before any download: ExpiredLinksError if
    a link still needed is past its expiry (``oe=``), DiskSpaceError if the result would not
    fit (``force`` overrides). Re-running resumes everything.
    ``image_longest`` and ``on_error`` are passed to ``pack``.
    """
    if delete_tars and store is None:
        raise ConfigError("--delete-tars needs --pack DST: the tars would be the only copy")
    links = read_links(links_file)
    if missing := [shard_name(i) for i in shards if i not in links]:
        raise ConfigError(f"{links_file} has no link for {', '.join(missing[:10])}")
    options = {"image_longest": image_longest, "on_error": on_error}
    where = Path(src), Path(store) if store else None
    run = _Run(links, *where, http or Http(), log or Log(), options, delete_tars, jobs, pack_jobs)
    committed = _committed(run)  # shards packed or with a tar on disk need no link
    need = [i for i in shards if shard_name(i) not in committed and not run.tar(i).exists()]
    check_expiry({i: links[i] for i in need}, links_file)
    Path(src).mkdir(parents=True, exist_ok=True)
    ready, todo, to_pack = _plan(run, shards)
    known = [s for s in todo.values() if s is not None]
    typical = max(known, default=TYPICAL_SHARD_BYTES)
    parts = sum(_size(f"{run.tar(i)}.part") for i in todo)
    fetched = sum(s or typical for s in todo.values())
    tars = min(fetched - parts, (run.max_tars or len(todo)) * typical)
    store_bytes = int(STORE_PER_TAR_BYTE * (fetched + sum(to_pack))) if run.store else 0
    hint = ""
    if run.store and not delete_tars:
        hint = f", add --delete-tars (keeps <= {jobs + pack_jobs + 1} tars)"
    plan = check_disk(run.src, run.store, tars, store_bytes, force, hint)
    packs = len(todo) + len(to_pack) if run.store else 0
    run.log.say(f"shards to download: {len(todo)}, to pack: {packs}; {plan}")
    return run.go(ready, todo, Bars(sum(known) or None, parts, jobs, progress))


def _size(path: str) -> int:
    return os.path.getsize(path) if os.path.exists(path) else 0

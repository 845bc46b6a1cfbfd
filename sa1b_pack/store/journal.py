"""Manifest commits that do not rewrite the whole manifest: a delta per commit, a full manifest
now and then.

Why: rewriting ``manifest.json`` whole at every commit writes the k - 1 entries already
committed again at shard k: about 1.4 KB x k per commit, O(k^2) over a pack of k shards
(docs/decisions/manifest-scaling.md has the measured bytes). Here a commit writes a *delta*:
the top-level fields and only the entries it changed, as ``manifests/<g>.delta.json``
(generation g, written atomically like the manifest: temp file, fsync, rename). Readers
merge the full manifest with the deltas that follow it, generation by generation.

A commit writes the full manifest instead (a *compaction*, which then drops the deltas it
holds) once ``COMPACT_EVERY`` deltas, or as many deltas as the full manifest lists shards,
follow it: bytes per commit stay ~ one entry + k / COMPACT_EVERY entries, and a reader reads
at most ``COMPACT_EVERY`` small files besides the manifest. A full manifest that deltas may
follow says format version 3 (``JOURNALED_VERSION``), so sa1b_pack releases that predate
deltas refuse the store instead of reading it without its newest shards; ``settle`` writes
the store back at rest (version 2, no delta) when a packer or an attach run ends, so a
finished store is what version 2 readers and writers know. Version 2 stores are read as
they are: a single manifest.json, generation 0.

Crash safety is the manifest's: a delta or a full manifest is visible whole or not at all;
a compaction that dies before dropping the old deltas leaves deltas readers skip (their
generation is not above the full manifest's). A reader racing a compaction that drops the
deltas it listed reads again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from ..errors import StoreError
from ..format.files import FORMAT_NAME, FORMAT_VERSION, JOURNALED_VERSION, MANIFEST
from ..storage import Storage

COMPACT_EVERY = 64  # deltas after a full manifest, at most
READ_TRIES = 5  # a reader racing compactions reads again this many times


@dataclass
class Journal:
    """Where a store's manifest stands: its newest generation, and the full manifest the
    deltas since follow (its generation, shards, and whether deltas may follow it)."""

    generation: int
    base: int
    base_shards: int
    journaled: bool


class _Gap(Exception):
    """The deltas read do not follow the full manifest read (a compaction ran between)."""


def read(storage: Storage) -> dict[str, Any]:
    """The committed manifest: the full one merged with the deltas after it. StoreError if
    there is none, or it is corrupt or of another format version."""
    for attempt in range(READ_TRIES):
        try:
            loaded = storage.load_manifest()
            if loaded is None:
                raise StoreError(f"{storage.url} is not a sa1b_pack store: no {MANIFEST}")
            manifest, storage.journal = _merge(storage, *loaded)
            return manifest
        except (FileNotFoundError, _Gap) as exc:
            if attempt == READ_TRIES - 1:
                why = f"manifest deltas out of sequence ({exc})"
                raise StoreError(f"{storage.url}: {why}") from None
    raise AssertionError("unreachable")


def commit(storage: Storage, manifest: dict[str, Any], changed: list[str]) -> None:
    """Commit ``manifest``, in which only the entries of shards ``changed`` (and top-level
    fields) differ from the committed one: a delta, or a compaction when due."""
    journal = _journal(storage)
    pending = journal.generation - journal.base
    if not (journal.journaled and pending < min(COMPACT_EVERY, journal.base_shards)):
        _write_full(storage, manifest, journal, JOURNALED_VERSION)
        return
    generation = journal.generation + 1
    body = {
        "format": FORMAT_NAME,
        "format_version": JOURNALED_VERSION,
        "generation": generation,
        "top": _top(manifest),
        "shards": {name: manifest["shards"].get(name) for name in sorted(set(changed))},
    }
    storage.save_delta(orjson.dumps(body, option=orjson.OPT_INDENT_2), generation)
    journal.generation = generation


def write(storage: Storage, manifest: dict[str, Any]) -> None:
    """Commit ``manifest`` whole, at rest: format version 2, no delta after it."""
    _write_full(storage, manifest, _journal(storage), FORMAT_VERSION)


def settle(storage: Storage, manifest: dict[str, Any]) -> None:
    """Bring the store back to rest if deltas may follow its manifest (end of a run)."""
    if _journal(storage).journaled:
        write(storage, manifest)


def _write_full(storage: Storage, manifest: dict[str, Any], journal: Journal, version: int):
    generation = journal.generation + 1
    shards = dict(sorted(manifest["shards"].items()))
    body = {**_top(manifest), "format_version": version, "generation": generation,
            "shards": shards}  # fmt: skip
    storage.save_manifest(orjson.dumps(body, option=orjson.OPT_INDENT_2), generation)
    storage.journal = Journal(generation, generation, len(shards), version == JOURNALED_VERSION)


def _journal(storage: Storage) -> Journal:
    """The storage's journal as last read or written; read now if never (a new store: 0)."""
    if storage.journal is None:
        if storage.load_manifest() is None:
            return Journal(0, 0, 0, False)
        read(storage)
    return storage.journal


def _top(manifest: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in manifest.items() if k not in ("shards", "generation")}


def _parse(storage: Storage, body: bytes) -> dict[str, Any]:
    try:
        manifest = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise StoreError(f"{storage.url}: {MANIFEST} is corrupt: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise StoreError(f"{storage.url}: {MANIFEST} is not a sa1b_pack manifest")
    if manifest.get("format_version") not in (FORMAT_VERSION, JOURNALED_VERSION):
        raise StoreError(
            f"{storage.url} has store format version {manifest.get('format_version')}; this "
            f"sa1b_pack reads version {FORMAT_VERSION} (and {JOURNALED_VERSION}, the same with "
            "commit deltas): re-pack it, or install the matching version"
        )
    return manifest


def _merge(storage: Storage, full: bytes, deltas: list[bytes]) -> tuple[dict, Journal]:
    """The full manifest with the deltas that follow it applied in order, and the journal."""
    manifest = _parse(storage, full)
    base = manifest.pop("generation", 0)
    journal = Journal(base, base, len(manifest["shards"]),
                      manifest["format_version"] == JOURNALED_VERSION)  # fmt: skip
    manifest["format_version"] = FORMAT_VERSION  # the store's format; the stamp is the file's
    for body in deltas:
        delta = _parse(storage, body)
        generation = delta.get("generation")
        if not isinstance(generation, int) or not {"top", "shards"} <= delta.keys():
            raise StoreError(f"{storage.url}: a manifest delta is not one: {body[:80]!r}")
        if generation <= base:
            continue  # held by the full manifest already (a compaction died before drops)
        if generation != journal.generation + 1:
            raise _Gap(f"generation {generation} after {journal.generation}")
        shards = manifest["shards"]
        manifest = {**delta["top"], "shards": shards}
        for name, entry in delta["shards"].items():
            if entry is None:
                shards.pop(name, None)
            else:
                shards[name] = entry
        journal.generation = generation
    if journal.generation != base:
        manifest["shards"] = dict(sorted(manifest["shards"].items()))
    return manifest, journal

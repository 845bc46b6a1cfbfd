"""The manifest: which shards a store holds, with counts, sizes and checksums of every file.

It is read and committed through the store's ``Storage`` (atomic replace locally, a new
generation on object storage), so a reader (or a crash) sees the old or the new manifest,
never a torn one. A commit that changes a few shards writes only their entries, as a delta
that readers merge (journal.py). ``info``, ``errors`` and the file checks work from the
manifest alone and import nothing heavy.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import fsspec

from ..errors import StoreError
from ..format.files import FORMAT_NAME, FORMAT_VERSION, RESIZED_QUALITY, part_files
from ..storage import Storage, storage_for
from . import journal

__all__ = ["StoreError", "empty_manifest", "file_digest", "read_manifest", "settle_manifest",
           "write_manifest"]  # fmt: skip


def empty_manifest(image_longest: int | None = None) -> dict[str, Any]:
    """A store with no shard yet; ``image_longest`` is fixed for the store's whole life."""
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "image_longest": image_longest,
        "resized_quality": RESIZED_QUALITY if image_longest else None,
        "shards": {},
    }


def read_manifest(root: str | os.PathLike | Storage) -> dict[str, Any]:
    """The committed manifest; StoreError if there is none, or it is corrupt or of another
    format version."""
    return journal.read(storage_for(root))


def write_manifest(
    root: str | os.PathLike | Storage, manifest: dict[str, Any], changed: list[str] | None = None
) -> None:
    """Commit ``manifest`` (shards in name order) as the store's one current manifest.

    ``changed``: the only shards whose entries differ from the committed manifest (the
    top-level fields may differ too); the commit is then a delta of those entries, or a
    compaction when due. Without it the whole manifest is written, at rest."""
    storage = storage_for(root)
    if changed is None:
        journal.write(storage, manifest)
    else:
        journal.commit(storage, manifest, changed)


def settle_manifest(root: Storage, manifest: dict[str, Any]) -> None:
    """End of a run of ``write_manifest(..., changed=...)``: write the store back at rest
    (one manifest.json, no delta) if it is not."""
    journal.settle(root, manifest)


def shard_names(manifest: dict[str, Any]) -> list[str]:
    """Committed shards in store order (by shard index)."""
    shards = manifest["shards"]
    return sorted(shards, key=lambda n: shards[n]["index"])


def file_digest(path: str | os.PathLike, fs: fsspec.AbstractFileSystem | None = None) -> dict:
    """Size and sha256 of a file (local or on an fsspec filesystem), for manifest and verify."""
    with fs.open(path, "rb") if fs is not None else open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256")
        return {"bytes": f.tell(), "sha256": digest.hexdigest()}


def check_files(storage: Storage, name: str, entry: dict[str, Any]) -> list[str]:
    """Problems of a committed part's files against its manifest entry: listed, present, of
    the listed size and sha256 (attached arrays too). Empty if the part's files are exactly
    what was committed."""
    folder = storage.part_path(name, entry)
    problems = []
    for f in part_files(entry):
        path = f"{folder}/{f}"
        want = entry["files"].get(f)
        if want is None:
            problems.append(f"{name}: {f}: not listed in the manifest")
        elif not storage.fs.isfile(path):
            problems.append(f"{name}: {f}: missing")
        elif (size := storage.fs.size(path)) != want["bytes"]:
            problems.append(f"{name}: {f}: {size} bytes, the manifest says {want['bytes']}")
        elif file_digest(path, storage.fs)["sha256"] != want["sha256"]:
            problems.append(f"{name}: {f}: sha256 differs from the manifest (content changed)")
    return problems


def left_out(manifest: dict[str, Any]) -> list[dict[str, str]]:
    """What packing left out or found wrong: shards that failed (``kind`` "failed", not in
    the store: the next pack retries them), tars that break off (``kind`` "damaged": the
    samples after ``member`` are missing), bad samples skipped (``kind`` "error", with
    ``--on-error skip``), stray or unpaired members (``kind`` "skipped"), samples packed as
    written despite a warning ("warning") and image ids held by two shards ("duplicate")."""
    rows = [
        {"shard": name, "member": "", "kind": "failed", "reason": failure["reason"]}
        for name, failure in sorted(manifest.get("failed", {}).items())
    ]
    for name in shard_names(manifest):
        entry = manifest["shards"][name]
        if damage := entry.get("damage"):
            why = f"{damage[1]}: the samples from here on are missing"
            rows.append({"shard": name, "member": damage[0], "kind": "damaged", "reason": why})
        kinds = (("error", "errors"), ("skipped", "skipped_members"), ("warning", "warnings"))
        for kind, key in kinds:
            for member, reason in entry.get(key, []):
                rows.append({"shard": name, "member": member, "kind": kind, "reason": reason})
        for other, count, first in entry.get("duplicates", []):
            ids = ", ".join(map(str, first[:5])) + (", ..." if count > 5 else "")
            rows.append({"shard": name, "member": "", "kind": "duplicate",
                         "reason": f"{count} image ids also in {other}: {ids}"})  # fmt: skip
    return rows


def summary(manifest: dict[str, Any], url: str) -> dict[str, Any]:
    """Shards, images, masks, bytes and format version, from the manifest alone."""
    entries = [manifest["shards"][n] for n in shard_names(manifest)]
    return {
        "root": url,
        "format_version": manifest["format_version"],
        "image_longest": manifest.get("image_longest"),
        "shards": len(entries),
        "images": sum(e["images"] for e in entries),
        "masks": sum(e["masks"] for e in entries),
        "store_bytes": sum(f["bytes"] for e in entries for f in e["files"].values()),
        "source_bytes": sum(e["source"]["bytes"] for e in entries),
        "skipped_members": sum(len(e["skipped_members"]) for e in entries),
        "errors": sum(len(e.get("errors", [])) for e in entries),
        "failed_shards": len(manifest.get("failed", {})),
        "damaged_shards": sum("damage" in e for e in entries),
        "duplicate_ids": sum(d[1] for e in entries for d in e.get("duplicates", [])),
        "subset": _subset_name(manifest.get("subset")),
        "warnings": sum(len(e.get("warnings", [])) for e in entries),
    }


def _subset_name(subset: dict[str, Any] | None) -> str | None:
    return f"{subset['file']} ({subset['images']:,} ids)" if subset else None


def attached_summary(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per attached name: dtype, shape, bytes per image and in all, shards holding it (a
    shard packed after the attach has none until attach runs again), images without one."""
    out = {}
    entries = [manifest["shards"][n] for n in shard_names(manifest)]
    for name, spec in sorted(manifest.get("attached", {}).items()):
        have = [e for e in entries if name in e.get("attached", {})]
        out[name] = {
            "dtype": spec["dtype"],
            "shape": tuple(spec["shape"]),
            "bytes_per_image": spec["nbytes"],
            "bytes": sum(e["files"][e["attached"][name]["file"]]["bytes"] for e in have),
            "shards": len(have),
            "of_shards": len(entries),
            "missing": sum(len(e["attached"][name]["missing"]) for e in have),
        }
    return out

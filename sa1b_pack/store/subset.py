"""Named subsets of SA-1B: lists of image ids or file names, as distillation projects ship
them (EdgeSAM's 1 % list: one file name per line; SlimSAM's 10 k ids), turned into image
ids, and into a store's global indices.

A list may mix forms, one per line: ``123``, ``sa_123``, ``sa_123.jpg``, ``sa_123.json``, a
path ending in one of those (``sa_000020/sa_223750.jpg``); blank lines and ``#`` comments
are ignored. Anything else is an error naming the line, never a silently dropped image.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..errors import ConfigError

ID_FORMS = re.compile(r"^(?:.*/)?(?:sa_)?(\d+)(?:\.jpg|\.json)?$")


def image_id_of(text: str) -> int:
    """The image id a list entry names; ValueError if it names none."""
    match = ID_FORMS.fullmatch(text.strip())
    if not match:
        raise ConfigError(f"{text!r} is not an image id or a sa_<N>.jpg / sa_<N>.json name")
    return int(match.group(1))


def read_ids(source: str | os.PathLike | Iterable[int | str]) -> np.ndarray:
    """Sorted unique image ids from a text file (one per line) or from any iterable of ids
    and names; ValueError naming the file and line of an entry that is neither."""
    if isinstance(source, str | os.PathLike):
        ids = []
        with open(source, encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                text = line.split("#", 1)[0].strip()
                if not text:
                    continue
                try:
                    ids.append(image_id_of(text))
                except ValueError as exc:
                    raise ConfigError(f"{source}, line {number}: {exc}") from None
        return np.unique(np.array(ids, np.int64))
    values = [v if isinstance(v, int | np.integer) else image_id_of(str(v)) for v in source]
    return np.unique(np.array(values, np.int64))


def ids_digest(ids: np.ndarray) -> str:
    """A short, order-free name for a set of ids (what a store records it was packed with)."""
    return hashlib.sha256(np.ascontiguousarray(ids, "<i8").tobytes()).hexdigest()[:16]


def subset_indices(
    held: np.ndarray, order: np.ndarray, ids: np.ndarray, where: str, missing: str = "error"
) -> np.ndarray:
    """Sorted global indices of the images with these ids (every copy, if shards repeat an
    id), given a store's sorted ids ``held`` and their global indices ``order`` (its
    ``id_index()``). ``missing``: "error" raises KeyError naming ids ``where`` lacks (the
    first ten and a count); "ignore" keeps the ones it has."""
    if missing not in ("error", "ignore"):
        raise ConfigError(f"missing must be 'error' or 'ignore', got {missing!r}")
    first = np.searchsorted(held, ids, "left")
    last = np.searchsorted(held, ids, "right")
    if missing == "error" and (absent := ids[first == last]).size:
        shown = ", ".join(map(str, absent[:10].tolist()))
        more = f" and {absent.size - 10} more" if absent.size > 10 else ""
        raise KeyError(
            f"{absent.size} of {ids.size} image ids are not in {where}: {shown}{more} "
            "(pass missing='ignore' to use the ones it holds)"
        )
    spans = [order[a:b] for a, b in zip(first.tolist(), last.tolist(), strict=True) if b > a]
    return np.sort(np.concatenate(spans)) if spans else np.empty(0, np.int64)


def describe(path: str | os.PathLike, ids: np.ndarray) -> dict[str, object]:
    """What a manifest records about the subset a store was packed with."""
    return {"file": Path(path).name, "images": int(ids.size), "sha256": ids_digest(ids)}

"""Meta's links file: which shard lives at which signed URL."""

from __future__ import annotations

import os
from pathlib import Path

from ..source.shards import SHARD_FILE

LINKS_PAGE = "https://ai.meta.com/datasets/segment-anything-downloads/"


def read_links(path: str | os.PathLike) -> dict[int, str]:
    """Meta's links file (``file_name<TAB>cdn_link``, a header line) -> {shard index: url}."""
    links: dict[int, str] = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        fields = [f.strip() for f in line.strip().split("\t")]
        if not line.strip() or (number == 1 and fields[0] == "file_name"):
            continue
        if len(fields) != 2 or not fields[1].startswith(("http://", "https://")):
            raise ValueError(f"{path}:{number}: expected 'file_name<TAB>url', got {line[:80]!r}")
        if match := SHARD_FILE.fullmatch(fields[0]):  # anything else listed is not a shard
            links[int(match.group(1))] = fields[1]
    return links

"""Meta's links file: which shard lives at which signed URL, and until when.

The CDN links are signed: a query parameter ``oe`` holds their expiry as hexadecimal Unix
seconds (``oe=6790A1B2``: 2025-01-22 07:43:46 UTC). Past it every request is refused, so
``fetch`` reads it first and stops before any download instead of failing shard by shard.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from ..errors import ConfigError, SA1BPackError
from ..source.shards import SHARD_FILE

LINKS_PAGE = "https://ai.meta.com/datasets/segment-anything-downloads/"


class ExpiredLinksError(SA1BPackError, ValueError):
    """The links file's signed URLs are past their expiry: a fresh file is needed."""


def read_links(path: str | os.PathLike) -> dict[int, str]:
    """Meta's links file (``file_name<TAB>cdn_link``, a header line) -> {shard index: url}."""
    links: dict[int, str] = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        fields = [f.strip() for f in line.strip().split("\t")]
        if not line.strip() or (number == 1 and fields[0] == "file_name"):
            continue
        if len(fields) != 2 or not fields[1].startswith(("http://", "https://")):
            raise ConfigError(f"{path}:{number}: expected 'file_name<TAB>url', got {line[:80]!r}")
        if match := SHARD_FILE.fullmatch(fields[0]):  # anything else listed is not a shard
            links[int(match.group(1))] = fields[1]
    return links


def link_expiry(url: str) -> dt.datetime | None:
    """When a signed link expires (UTC), from its ``oe=`` parameter; None without one (or
    with one that is not a hexadecimal time: then the server decides)."""
    values = parse_qs(urlsplit(url).query).get("oe")
    if not values:
        return None
    try:
        return dt.datetime.fromtimestamp(int(values[0], 16), dt.UTC)
    except (ValueError, OverflowError, OSError):
        return None


def check_expiry(
    links: Mapping[int, str], source: str | os.PathLike, now: dt.datetime | None = None
) -> None:
    """ExpiredLinksError if any of ``links`` has expired, naming the date (the earliest, and
    how many, if only some have); links without an expiry pass."""
    now = now or dt.datetime.now(dt.UTC)
    expiries = [e for e in map(link_expiry, links.values()) if e is not None]
    expired = sorted(e for e in expiries if e <= now)
    if not expired:
        return
    when = expired[0].strftime("%Y-%m-%d %H:%M UTC")
    if len(expired) == len(links):
        what = f"the links in {source} expired on {when}"
        if expired[-1] != expired[0]:
            what = f"the links in {source} expired, the first on {when}"
    else:
        what = (f"{len(expired)} of the {len(links)} links needed from {source} have "
                f"expired, the earliest on {when}")  # fmt: skip
    raise ExpiredLinksError(
        f"{what}: the CDN refuses expired links, so nothing was downloaded. Download a fresh "
        f"links file from Meta's SA-1B page ({LINKS_PAGE}) and run again with it."
    )

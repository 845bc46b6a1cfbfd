"""What a file saved under a shard's name is, when it is not a tar at all.

A failed or interrupted download often leaves an error page where the shard should be: the
CDN's HTML, an S3-style XML ``<Error>``, a JSON error, or nothing. tarfile can only say
"truncated header"; ``not_a_tar(head)`` reads the file's first few KB and says in plain words
what it is and what to do, so the user refetches instead of debugging the packer.
"""

from __future__ import annotations

import html
import json
import re

SNIFF_BYTES = 4096  # enough for a <title>, an XML <Code>/<Message> or a JSON error
TAR_MAGIC_AT = 257  # POSIX/GNU tar: "ustar" in the first header block
REFETCH = "an error page saved instead of the shard? download it again with a fresh links file"
ARCHIVES = (  # magic bytes -> what it is, what to do (tarfile opens gzip, bz2 and xz tars)
    (b"\x1f\x8b", "a gzip file that does not hold a readable tar (cut short, or no tar inside)",
     "download it again"),
    (b"PK\x03\x04", "a zip archive", "SA-1B shards are plain tar: download the shard itself"),
    (b"PK\x05\x06", "an empty zip archive", "download the shard itself"),
    (b"BZh", "a bzip2 file that does not hold a readable tar", "download it again"),
    (b"\xfd7zXZ\x00", "an xz file that does not hold a readable tar", "download it again"),
    (b"(\xb5/\xfd", "a zstd file", "decompress it (zstd -d) or download the plain tar"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive", "SA-1B shards are plain tar: download the shard"),
    (b"Rar!\x1a\x07", "a RAR archive", "SA-1B shards are plain tar: download the shard itself"),
    (b"%PDF", "a PDF document", "download the shard itself"),
    (b"\xff\xd8\xff", "a JPEG image", "download the shard itself, not one of its images"),
)  # fmt: skip


def not_a_tar(head: bytes) -> str | None:
    """What ``head`` (the first bytes of a file tarfile could not open) is, ending with what
    to do; None if it could be a damaged tar or nothing we recognise."""
    if not head:
        return "an empty file (0 bytes), not a tar: the download failed; download it again"
    if head[TAR_MAGIC_AT : TAR_MAGIC_AT + 5] == b"ustar":
        return None  # a tar header: the damage is elsewhere
    for magic, what, action in ARCHIVES:
        if head.startswith(magic):
            return f"not a tar but {what}: {action}"
    text = _text(head)
    if text is None:
        return None
    body = text.lstrip()
    lower = body[:1000].lower()
    if lower.startswith("<") and ("<!doctype html" in lower or "<html" in lower):
        title = _first(r"<title[^>]*>(.*?)</title>", body)
        return f"not a tar but an HTML page{f' titled {title!r}' if title else ''}: {REFETCH}"
    if body.startswith("<"):
        return f"not a tar but an XML document{_xml(body)}: {REFETCH}"
    if body.startswith(("{", "[")):
        return f"not a tar but JSON{_json(body)}: {REFETCH}"
    line = _short(body.splitlines()[0] if body else "")
    return f"not a tar but a text file starting {line!r}: {REFETCH}"


def _text(head: bytes) -> str | None:
    """``head`` as text if it is text (UTF-8, a BOM allowed, a last character perhaps cut)."""
    if b"\x00" in head:
        return None
    for cut in range(4):  # the head may end inside a multi-byte character
        try:
            text = head[: len(head) - cut].decode("utf-8-sig")
        except UnicodeDecodeError:
            continue
        printable = sum(c.isprintable() or c in "\r\n\t" for c in text)
        return text if printable >= 0.95 * len(text) else None
    return None


def _short(text: str, limit: int = 80) -> str:
    text = " ".join(html.unescape(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _first(pattern: str, text: str) -> str | None:
    found = re.search(pattern, text, re.IGNORECASE | re.DOTALL)
    return _short(found.group(1)) if found and found.group(1).strip() else None


def _xml(body: str) -> str:
    """`` <Error>: AccessDenied, "Request has expired"`` for an S3/CDN error document."""
    root = re.search(r"<([A-Za-z_][\w.:-]*)", re.sub(r"<\?.*?\?>|<!--.*?-->", "", body, flags=re.S))
    code, message = _first(r"<Code>(.*?)</Code>", body), _first(r"<Message>(.*?)</Message>", body)
    details = ", ".join([*([code] if code else []), *([repr(message)] if message else [])])
    name = f" <{root.group(1)}>" if root else ""
    return f"{name}{': ' + details if details else ''}"


def _json(body: str) -> str:
    """`` ({"error": ...}): "the message"``: the error's code and message when it has them."""
    try:
        doc = json.loads(body)
    except ValueError:  # cut at SNIFF_BYTES, or not JSON after all
        return f" starting {_short(body.splitlines()[0])!r}"
    error = doc.get("error", doc) if isinstance(doc, dict) else None
    if isinstance(error, str):
        return f": {_short(error)!r}"
    if isinstance(error, dict):
        said = [str(error[k]) for k in ("code", "message") if k in error]
        if said:
            return f": {_short(', '.join(said))!r}"
    return f" starting {_short(body.splitlines()[0])!r}"

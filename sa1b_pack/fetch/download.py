"""One URL -> one complete file: HTTP range-resume, retries with backoff, a verified size.

Bytes go to ``NAME.part`` and only a file whose size equals the server's (Content-Length,
or the total of Content-Range) is renamed to ``NAME``, so a file under its final name is
always whole, and a killed run resumes from the ``.part``. urllib3's own ``Retry`` cannot
resume a body that drops half way, so one loop here retries everything, each attempt asking
for the bytes still missing. SA-1B's links file has no checksums: the size is all a download
can be checked against; a damaged body of the right size is caught by the packer.
"""

from __future__ import annotations

import os
import random
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import requests
import urllib3

from ..errors import SA1BPackError
from ..progress import say

CHUNK = 1 << 20
BACKOFF_CAP = 60.0  # seconds: the longest wait between two attempts
EXPIRED = {403, 410}  # what a signed CDN link answers once its signature has expired
TRANSIENT = {408, 425, 429, 500, 502, 503, 504}
NETWORK_ERRORS = (OSError, urllib3.exceptions.HTTPError)  # requests' errors are OSErrors
CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
EXPIRED_HINT = "links file is expired: get a fresh one"


@dataclass(frozen=True)
class Http:
    """Client settings: ``retries`` failed attempts in a row (progress resets the count),
    ``timeout`` seconds to connect and between two reads, ``backoff`` the first wait."""

    retries: int = 5
    timeout: float = 60.0
    backoff: float = 1.0


class DownloadError(SA1BPackError):
    """A file that cannot be fetched now: expired link, 404, or out of retries."""

    def __init__(self, name: str, reason: str, *, expired: bool = False) -> None:
        self.name, self.reason, self.expired = name, reason, expired
        super().__init__(f"{name}: {reason}")


class Stopped(Exception):
    """The run is being stopped (Ctrl-C or a fatal error elsewhere): the .part is kept."""


class _Transient(Exception):
    """An attempt failed in a way that another attempt may fix."""


@dataclass
class Log:
    """Messages that never break a progress bar, kept in ``lines``; ``once`` says a thing once
    per run."""

    quiet: bool = False
    lines: list[str] = field(default_factory=list)
    _said: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def say(self, message: str) -> None:
        self.lines.append(message)
        say(message)

    def once(self, message: str) -> None:
        with self._lock:
            if message in self._said:
                return
            self._said.add(message)
        self.say(message)


_local = threading.local()


def session() -> requests.Session:
    """One keep-alive session per thread (a Session is not meant to be shared)."""
    if getattr(_local, "session", None) is None:
        _local.session = requests.Session()
        # identity: the bytes on disk must be the bytes the server sized, never re-encoded
        _local.session.headers.update({"Accept-Encoding": "identity"})
    return _local.session


def _check(response: requests.Response, name: str) -> None:
    code = response.status_code
    if code in EXPIRED:
        raise DownloadError(name, f"HTTP {code}: {EXPIRED_HINT}", expired=True)
    if code == 404:
        raise DownloadError(name, "HTTP 404: not on the server (is the links file for SA-1B?)")
    if code in TRANSIENT:
        raise _Transient(f"HTTP {code} {response.reason}")
    if code >= 400:
        raise DownloadError(name, f"HTTP {code} {response.reason}")


def _total(response: requests.Response) -> int | None:
    """The whole file's size as this response states it, if it does."""
    if response.status_code == 206:
        match = CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
        return int(match.group(3)) if match and match.group(3) != "*" else None
    length = response.headers.get("Content-Length")
    return int(length) if length and length.isdigit() else None


def _wait(http: Http, failures: int, stop: threading.Event) -> None:
    """Exponential backoff with jitter, so parallel downloads do not retry in lockstep."""
    delay = min(BACKOFF_CAP, http.backoff * 2 ** (failures - 1)) * random.uniform(0.5, 1.0)
    if stop.wait(delay):
        raise Stopped


def probe(url: str, name: str, http: Http, stop: threading.Event, log: Log) -> int | None:
    """The file's size from HEAD, else from a one-byte GET; None if the server never says."""
    failures = 0
    while not stop.is_set():
        try:
            with session().head(url, timeout=http.timeout, allow_redirects=True) as head:
                if head.ok and _total(head) is not None:
                    return _total(head)
            # No size, or an error that a GET must confirm: a URL signed for GET may refuse HEAD
            one = {"Range": "bytes=0-0"}
            with session().get(url, headers=one, stream=True, timeout=http.timeout) as response:
                _check(response, name)
                return _total(response)
        except (_Transient, *NETWORK_ERRORS) as exc:
            failures += 1
            if failures > http.retries:
                raise DownloadError(
                    name, f"size query failed {failures} times ({_why(exc)})"
                ) from None
            log.say(f"{name}: size query failed ({_why(exc)}); retry {failures}/{http.retries}")
            _wait(http, failures, stop)
    raise Stopped


def _why(exc: BaseException) -> str:
    """A network failure in a few words (urllib3 nests the cause in its args)."""
    causes = [exc, *(a for a in exc.args if isinstance(a, BaseException))]
    if any(isinstance(c, requests.Timeout | urllib3.exceptions.TimeoutError) for c in causes):
        return "timed out"
    if any(isinstance(c, ConnectionResetError) for c in causes):
        return "connection reset"
    if any(isinstance(c, urllib3.exceptions.IncompleteRead) for c in causes):
        return "connection dropped mid-body"
    return str(exc) or type(exc).__name__


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def download(
    url: str,
    dest: Path,
    http: Http,
    stop: threading.Event,
    log: Log,
    expected: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Fetch ``url`` to ``dest`` through ``dest.part``, resuming; its size, or DownloadError.

    ``expected`` is the size a probe saw; ``progress`` gets the bytes in the file so far
    (it can go down when a server ignores Range and the file restarts from zero).
    """
    name = dest.name.removesuffix(".tar")
    part = dest.with_name(dest.name + ".part")
    failures, best = 0, _size(part)
    while True:
        if stop.is_set():
            raise Stopped
        offset = _size(part)
        if expected is not None and offset > expected:
            log.say(f"{name}: {part.name} is larger than the file on the server: restarting")
            part.unlink()
            offset = 0
        if progress:
            progress(offset)
        try:
            if expected is None or offset < expected:
                total = _attempt(url, part, offset, expected, name, http, stop, progress, log)
                expected = total if total is not None else expected
            got = _size(part)
            if expected is not None and got != expected:
                raise _Transient(f"size mismatch: got {got:,} of {expected:,} bytes")
        except (_Transient, *NETWORK_ERRORS) as exc:
            got = _size(part)
            failures = 1 if got > best else failures + 1  # progress resets the count
            best = max(best, got)
            if failures > http.retries:
                raise DownloadError(
                    name,
                    f"{_why(exc)}; gave up after {http.retries} retries "
                    f"({got:,} bytes kept in {part.name}: re-run to resume)",
                ) from None
            where = "" if isinstance(exc, _Transient) else f" at {got:,} bytes"
            log.say(f"{name}: {_why(exc)}{where}; retry {failures}/{http.retries}")
            _wait(http, failures, stop)
            continue
        with open(part, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(part, dest)
        return got


def _attempt(
    url: str,
    part: Path,
    offset: int,
    expected: int | None,
    name: str,
    http: Http,
    stop: threading.Event,
    progress: Callable[[int], None] | None,
    log: Log,
) -> int | None:
    """One GET from ``offset`` appended to ``part``; the total size the server states."""
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    with session().get(url, headers=headers, stream=True, timeout=http.timeout) as response:
        if response.status_code == 416:  # our .part is not a prefix of this file
            part.unlink(missing_ok=True)
            raise _Transient(f"server refused the range from {offset:,}: restarting from zero")
        _check(response, name)
        total = _total(response)
        if offset and response.status_code == 200:
            log.once("the server ignores Range requests: partial downloads restart from zero")
            offset = 0
        elif response.status_code == 206:
            match = CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
            if not match or int(match.group(1)) != offset:
                part.unlink(missing_ok=True)
                raise _Transient(f"bad Content-Range {response.headers.get('Content-Range')!r}")
        if offset and expected is not None and total is not None and total != expected:
            part.unlink(missing_ok=True)
            raise _Transient(f"the file changed size on the server ({expected:,} -> {total:,})")
        with open(part, "r+b" if offset else "wb") as f:
            f.seek(offset)
            f.truncate()
            done = offset
            chunks = response.raw.stream(CHUNK, decode_content=False)
            while True:
                if stop.is_set():
                    raise Stopped
                chunk = next(chunks, None)  # network errors propagate to the retry loop
                if chunk is None:
                    break
                f.write(chunk)
                done += len(chunk)
                if progress:
                    progress(done)
        return total

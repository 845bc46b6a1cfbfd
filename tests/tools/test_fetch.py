"""fetch against a real HTTP server on loopback, serving synthetic shards with Range support
and injected faults; every fetched store must equal a direct pack of the same tars."""

from __future__ import annotations

import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from sa1b_pack.cli import main
from sa1b_pack.fetch import disk as disk_module
from sa1b_pack.fetch import download as download_module
from sa1b_pack.fetch.disk import DiskSpaceError
from sa1b_pack.fetch.download import Http, Log
from sa1b_pack.fetch.links import ExpiredLinksError, read_links
from sa1b_pack.fetch.run import fetch
from sa1b_pack.store.manifest import read_manifest
from sa1b_pack.testing.synth import synth_shards
from sa1b_pack.write.packer import pack

SHARDS = [0, 1, 2, 3]
# A timeout no healthy loopback transfer reaches, even on a loaded machine: the tests assert
# outcomes (whole files, the errors named), never how many retries a run took.
FAST = Http(retries=4, timeout=30.0, backoff=0.01)
# Only where a stalled body must be given up on (a stall lasts until the server stops): a
# healthy read that happens to pause this long is retried like any other, with the same outcome.
STALL_TIMEOUT = 2.0
SERVER_LIFETIME = 60.0  # a server shuts itself down after this, whatever the test does


@dataclass
class Faults:
    """Switches the handler reads; counts of 'how many more GETs' for the one-off faults."""

    status: dict[str, int] = field(default_factory=dict)  # shard -> forced HTTP status
    resets: Counter = field(default_factory=Counter)  # GETs reset (RST) half way
    stalls: Counter = field(default_factory=Counter)  # GETs that stop sending until `release`
    short: Counter = field(default_factory=Counter)  # GETs with no Content-Length, cut short
    no_range: bool = False  # ignore Range, always 200 and the whole file
    no_head: bool = False  # 403 to HEAD, as URLs signed for GET only answer
    delay: float = 0.0  # seconds per 4 KiB chunk: a slow server
    gets: Counter = field(default_factory=Counter)
    requests: Counter = field(default_factory=Counter)  # every HEAD and GET
    ranges: list[tuple[str, str | None]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)  # set as the server stops
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, kind: Counter, name: str) -> bool:
        with self.lock:
            if kind[name] > 0:
                kind[name] -= 1
                return True
            return False


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_HEAD(self) -> None:
        self.serve(body=False)

    def do_GET(self) -> None:
        self.serve(body=True)

    def serve(self, body: bool) -> None:
        faults: Faults = self.server.faults  # type: ignore[attr-defined]
        url = urlsplit(self.path)
        name = url.path.rsplit("/", 1)[-1].removesuffix(".tar")
        path = self.server.root / f"{name}.tar"  # type: ignore[attr-defined]
        if "oh" not in parse_qs(url.query):  # the query string of a signed link was lost
            faults.status.setdefault(name, 400)
        with faults.lock:
            faults.requests[name] += 1
        if body:
            with faults.lock:
                faults.gets[name] += 1
                faults.ranges.append((name, self.headers.get("Range")))
        if name in faults.status or not path.is_file() or (faults.no_head and not body):
            self.send_response(faults.status.get(name, 403 if path.is_file() else 404))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = path.read_bytes()
        start, code = 0, 200
        asked = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if asked and not faults.no_range:
            start, code = int(asked.group(1)), 206
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        short = body and faults.take(faults.short, name)
        self.send_response(code)
        if not faults.no_range:
            self.send_header("Accept-Ranges", "bytes")
        if code == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        if short:
            self.send_header("Connection", "close")
            self.close_connection = True
        else:
            self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        if body:
            self.send_body(data[start:], name, short)

    def send_body(self, payload: bytes, name: str, short: bool) -> None:
        faults: Faults = self.server.faults  # type: ignore[attr-defined]
        half = len(payload) // 2
        try:
            if short:
                self.wfile.write(payload[:half])
            elif faults.take(faults.resets, name):
                self.wfile.write(payload[:half])
                linger = struct.pack("ii", 1, 0)  # close with RST: "connection reset by peer"
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                self.connection.close()
                self.close_connection = True
            elif faults.take(faults.stalls, name):
                self.wfile.write(payload[: half // 2])
                self.wfile.flush()
                faults.release.wait(SERVER_LIFETIME)  # until the client gives up and the test ends
                self.close_connection = True
            else:
                for at in range(0, len(payload), 4096):
                    self.wfile.write(payload[at : at + 4096])
                    time.sleep(faults.delay)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


@contextmanager
def serve(root: Path, faults: Faults) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.root, server.faults = root, faults  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    watchdog = threading.Timer(SERVER_LIFETIME, server.shutdown)
    watchdog.daemon = True
    watchdog.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        faults.release.set()
        watchdog.cancel()
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("origin")
    synth_shards(root, SHARDS, 3, small=True, progress=False)
    return root


@pytest.fixture(scope="module")
def direct(origin: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Manifest shard entries of the origin tars packed directly: what fetch must produce."""
    dst = tmp_path_factory.mktemp("direct")
    assert pack(origin, dst, SHARDS, progress=False).ok
    return read_manifest(dst)["shards"]


@pytest.fixture(autouse=True)
def small_chunks_no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(download_module, "CHUNK", 4096)  # resume mid-file on tiny shards
    for proxy in ("http_proxy", "https_proxy", "all_proxy"):  # loopback must stay loopback
        monkeypatch.delenv(proxy, raising=False)
        monkeypatch.delenv(proxy.upper(), raising=False)


def oe(seconds_from_now: float) -> str:
    """A signed link's expiry as Meta's CDN writes it: hexadecimal Unix seconds."""
    return f"{int(time.time() + seconds_from_now):X}"


FRESH = oe(86400)  # links signed for one more day


def links_file(
    path: Path, base: str, shards: list[int] = SHARDS, expires: dict[int, str] | None = None
) -> Path:
    """Meta's format; ``expires``: the ``oe=`` of some shards (default: a day from now)."""
    lines = ["file_name\tcdn_link"]
    lines += [
        f"sa_{i:06d}.tar\t{base}/sa1b/sa_{i:06d}.tar?_nc_ht=cdn&oh=00_sig{i}"
        f"&oe={(expires or {}).get(i, FRESH)}"
        for i in shards
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_read_links(tmp_path: Path) -> None:
    links = links_file(tmp_path / "links.txt", "https://cdn.example", [0, 7])
    with links.open("a") as f:
        f.write("\nsa_notes.txt\thttps://cdn.example/notes.txt\n")
    assert read_links(links) == {
        0: f"https://cdn.example/sa1b/sa_000000.tar?_nc_ht=cdn&oh=00_sig0&oe={FRESH}",
        7: f"https://cdn.example/sa1b/sa_000007.tar?_nc_ht=cdn&oh=00_sig7&oe={FRESH}",
    }
    (tmp_path / "bad.txt").write_text("file_name\tcdn_link\nsa_000000.tar https://x\n")
    with pytest.raises(ValueError, match=r"bad.txt:2: expected 'file_name<TAB>url'"):
        read_links(tmp_path / "bad.txt")


def test_expired_links_refused_before_any_request(origin: Path, tmp_path: Path) -> None:
    src, dst, faults = tmp_path / "src", tmp_path / "dst", Faults()
    with serve(origin, faults) as base:
        stale = links_file(tmp_path / "stale.txt", base, expires=dict.fromkeys(SHARDS, "6790A1B2"))
        with pytest.raises(ExpiredLinksError) as caught:
            fetch(stale, src, SHARDS, store=dst, http=FAST, progress=False, log=Log())
        assert str(caught.value).startswith(
            f"the links in {stale} expired on 2025-01-22 07:43 UTC: the CDN refuses"
        )
        assert "Download a fresh links file from Meta's SA-1B page (https://ai.meta" in str(
            caught.value
        )
        some = links_file(tmp_path / "some.txt", base, expires={1: oe(-7200), 3: oe(-60)})
        with pytest.raises(ExpiredLinksError, match=r"2 of the 4 links needed from .*some.txt "
                           r"have expired, the earliest on 20\d\d-"):  # fmt: skip
            fetch(some, src, SHARDS, http=FAST, progress=False, log=Log())
        assert faults.requests == Counter() and not src.exists()  # nothing asked, nothing made
        assert fetch(some, src, [0, 2], http=FAST, progress=False, log=Log()).ok  # not needed
        (src / "sa_000001.tar").write_bytes((origin / "sa_000001.tar").read_bytes())
        report = fetch(some, src, [1], store=dst, http=FAST, progress=False, log=Log())
        assert report.packed == ["sa_000001"]  # on disk: its expired link is not needed
        no_expiry = tmp_path / "plain.txt"
        no_expiry.write_text(f"file_name\tcdn_link\nsa_000003.tar\t{base}/sa_000003.tar?oh=1\n")
        assert fetch(no_expiry, src, [3], http=FAST, progress=False, log=Log()).ok


def test_cli_refuses_expired_links(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    stale = links_file(tmp_path / "links.txt", "https://cdn.example", [0], {0: "6790A1B2"})
    assert main(["fetch", str(stale), str(tmp_path / "src"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "error: the links in" in err and "expired on 2025-01-22 07:43 UTC" in err


def tars_left(src: Path) -> list[str]:
    return sorted(p.name for p in src.iterdir())


def test_fetch_pack_through_faults_then_fresh_links(
    origin: Path, direct: dict, tmp_path: Path, tools
) -> None:
    faults = Faults(
        status={"sa_000002": 403},
        resets=Counter(sa_000000=2),
        stalls=Counter(sa_000001=1),
        short=Counter(sa_000003=1),
        delay=0.001,
    )
    src, dst, log = tmp_path / "src", tmp_path / "dst", Log()
    with serve(origin, faults) as base:
        links = links_file(tmp_path / "links.txt", base)
        http = replace(FAST, timeout=STALL_TIMEOUT)  # sa_000001's stall must time out
        run = dict(store=dst, delete_tars=True, jobs=2, http=http, progress=False, log=log)
        report = fetch(links, src, SHARDS, **run)
        assert report.expired == ["sa_000002"]
        assert report.failed == {"sa_000002": "HTTP 403: links file is expired: get a fresh one"}
        assert (
            sorted(report.packed)
            == sorted(report.deleted)
            == ["sa_000000", "sa_000001", "sa_000003"]
        )
        assert tars_left(src) == []
        assert tools.same_contents(read_manifest(dst)["shards"]) == tools.same_contents(
            {k: direct[k] for k in report.packed}
        )
        said = "\n".join(log.lines)
        assert "sa_000000: connection reset at" in said
        size = (origin / "sa_000003.tar").stat().st_size  # the short body is its first half
        assert f"sa_000003: size mismatch: got {size // 2:,} of {size:,} bytes; retry " in said
        assert "sa_000001: timed out" in said
        assert "links file is expired: get a fresh one (https://" in said
        resumed = [(n, r) for n, r in faults.ranges if n in ("sa_000001", "sa_000003") and r]
        assert {n for n, _ in resumed} == {"sa_000001", "sa_000003"}  # each resumed mid-file
        assert all(re.fullmatch(r"bytes=[1-9]\d*-", r) for _, r in resumed)

        faults.status.clear()  # the fresh links file
        before = faults.gets.copy()
        report = fetch(links, src, SHARDS, **run)
        assert report.ok and report.packed == ["sa_000002"]
        assert set(faults.gets - before) == {"sa_000002"}  # done shards were not fetched again
    assert tools.same_contents(read_manifest(dst)["shards"]) == tools.same_contents(direct)
    assert tars_left(src) == []


@pytest.mark.parametrize("no_range", [False, True])
def test_resume_part_files(origin: Path, tmp_path: Path, no_range: bool) -> None:
    src, log = tmp_path / "src", Log()
    src.mkdir()
    for index, cut in ((1, 10_000), (2, 5_000)):
        data = (origin / f"sa_00000{index}.tar").read_bytes()
        (src / f"sa_00000{index}.tar.part").write_bytes(data[:cut])
    faults = Faults(no_range=no_range)
    with serve(origin, faults) as base:
        links = links_file(tmp_path / "links.txt", base)
        report = fetch(links, src, [1, 2], jobs=2, http=FAST, progress=False, log=log)
    assert report.ok and sorted(report.downloaded) == ["sa_000001", "sa_000002"]
    assert tars_left(src) == ["sa_000001.tar", "sa_000002.tar"]
    for index in (1, 2):
        name = f"sa_00000{index}.tar"
        assert (src / name).read_bytes() == (origin / name).read_bytes()
    first = {}
    for name, asked in faults.ranges:
        first.setdefault(name, asked)
    assert first == {"sa_000001": "bytes=10000-", "sa_000002": "bytes=5000-"}  # from the .part
    restarts = [line for line in log.lines if "ignores Range" in line]
    assert len(restarts) == (1 if no_range else 0)  # said once, not once per file


def test_slow_server_is_not_a_timeout(
    origin: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """The timeout bounds the wait between bytes, not the transfer: 15 chunks 0.25 s apart
    take ~1.9x the 2 s timeout, each gap 1/8 of it (the margin a loaded machine needs).
    With progress on and stderr not a terminal, the log gets plain lines, no redraws."""
    src, log = tmp_path / "src", Log()
    assert (origin / "sa_000000.tar").stat().st_size > 14 * 4096  # 15 chunks of 4 KiB
    with serve(origin, Faults(delay=0.25)) as base:
        links = links_file(tmp_path / "links.txt", base)
        http = replace(FAST, timeout=2.0)
        report = fetch(links, src, [0], jobs=1, http=http, log=log)  # with progress bars
    assert report.downloaded == ["sa_000000"]
    assert not [line for line in log.lines if "retry" in line]
    err = capfd.readouterr().err
    assert "\r" not in err and "\x1b" not in err, repr(err)
    assert err.splitlines()[0].startswith("shards to download: 1")
    assert re.match(r"download: 100% (\S+)/\1 \[", err.splitlines()[-1]), err


def test_http_errors_are_reported_and_the_rest_go_on(origin: Path, tmp_path: Path) -> None:
    src, log = tmp_path / "src", Log()
    # HEAD refused everywhere: a 403 is only "expired" once a GET confirms it (sa_000002 is fine)
    faults = Faults(status={"sa_000000": 404, "sa_000001": 410, "sa_000003": 503}, no_head=True)
    with serve(origin, faults) as base:
        links = links_file(tmp_path / "links.txt", base)
        report = fetch(links, src, SHARDS, jobs=2, http=FAST, progress=False, log=log)
    assert report.downloaded == ["sa_000002"] and not report.ok
    assert report.expired == ["sa_000001"]
    assert report.failed["sa_000000"].startswith("HTTP 404: not on the server")
    assert report.failed["sa_000001"] == "HTTP 410: links file is expired: get a fresh one"
    assert re.match(r"size query failed \d+ times \(HTTP 503", report.failed["sa_000003"])
    assert tars_left(src) == ["sa_000002.tar"]


def test_disk_space_refusal(origin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    total = sum((origin / f"sa_00000{i}.tar").stat().st_size for i in SHARDS)
    usage = shutil.disk_usage(tmp_path)
    free = int(total * 1.8)  # tars + store need 2x; with --delete-tars 3 tars + store do fit
    monkeypatch.setattr(disk_module, "HEADROOM", 0)
    monkeypatch.setattr(disk_module.shutil, "disk_usage", lambda p: usage._replace(free=free))
    faults = Faults()
    src, dst = tmp_path / "src", tmp_path / "dst"
    with serve(origin, faults) as base:
        links = links_file(tmp_path / "links.txt", base)
        run = dict(store=dst, jobs=1, http=FAST, progress=False, log=Log())
        refused = r"not enough disk: .* free\. .* add --delete-tars \(keeps <= 3 tars\)"
        with pytest.raises(DiskSpaceError, match=refused):
            fetch(links, src, SHARDS, **run)
        assert not faults.gets  # refused before any download
        assert fetch(links, src, SHARDS, delete_tars=True, **run).ok
        monkeypatch.setattr(disk_module.shutil, "disk_usage", lambda p: usage._replace(free=0))
        run["store"] = tmp_path / "dst2"
        with pytest.raises(DiskSpaceError):
            fetch(links, tmp_path / "src2", [0], **run)
        assert fetch(links, tmp_path / "src2", [0], force=True, **run).packed == ["sa_000000"]


def test_bad_tars_kept_truncated_refetched_committed_deleted(
    origin: Path, direct: dict, tmp_path: Path, tools
) -> None:
    served, src, dst, log = tmp_path / "served", tmp_path / "src", tmp_path / "dst", Log()
    shutil.copytree(origin, served)
    broken = (origin / "sa_000000.tar").read_bytes()[:30_000]
    (served / "sa_000000.tar").write_bytes(broken)  # corrupt at the source: right size, bad tar
    src.mkdir()
    (src / "sa_000001.tar").write_bytes((origin / "sa_000001.tar").read_bytes()[:20_000])
    assert pack(origin, dst, [2, 3], progress=False).ok  # committed before a kill...
    for index in (2, 3):  # ...that left their tars behind
        shutil.copy(origin / f"sa_00000{index}.tar", src)
    jpeg = dst / "parts" / "sa_000003" / "jpeg.bin"
    jpeg.write_bytes(b"X" + jpeg.read_bytes()[1:])  # a part damaged after its commit
    faults = Faults()
    with serve(served, faults) as base:
        links = links_file(tmp_path / "links.txt", base)
        run = dict(store=dst, delete_tars=True, jobs=2, http=FAST, progress=False, log=log)
        report = fetch(links, src, SHARDS, **run)
        assert report.downloaded == ["sa_000000", "sa_000001"]
        assert report.packed == ["sa_000001"] and report.already_packed == ["sa_000002"]
        assert sorted(report.deleted) == ["sa_000001", "sa_000002"]
        assert "the tar ends inside this member" in report.pack_failed["sa_000000"]
        assert "sa_000000.tar kept" in report.pack_failed["sa_000000"]
        assert "jpeg.bin: sha256 differs from the manifest" in report.pack_failed["sa_000003"]
        size = (origin / "sa_000001.tar").stat().st_size
        assert f"sa_000001.tar: 20,000 bytes, not the {size:,}" in "\n".join(log.lines)
        assert tars_left(src) == ["sa_000000.tar", "sa_000001.tar.bad", "sa_000003.tar"]
        assert set(faults.gets) == {"sa_000000", "sa_000001"}

        before = faults.gets.copy()
        report = fetch(links, src, SHARDS, **run)  # the source tar is bad: not fetched again
        assert faults.gets == before
        assert report.present == ["sa_000000"] and "sa_000000" in report.pack_failed
    shards = tools.same_contents(read_manifest(dst)["shards"])
    assert shards == tools.same_contents(
        {k: direct[k] for k in ("sa_000001", "sa_000002", "sa_000003")}
    )


def test_cli_fetch(
    origin: Path, direct: dict, tmp_path: Path, capsys: pytest.CaptureFixture, tools
) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    faults = Faults(status={"sa_000001": 403})
    with serve(origin, faults) as base:
        links = str(links_file(tmp_path / "links.txt", base))
        argv = ["fetch", links, str(src), "--shards", "0-1", "--pack", str(dst), "--delete-tars"]
        argv += ["--jobs", "2", "--retries", "2", "--quiet"]
        assert main(argv) == 1
        out, err = capsys.readouterr()
        assert "sa_000001: HTTP 403: links file is expired: get a fresh one" in err
        assert "downloaded 1, packed 1" in out
        faults.status.clear()
        assert main(argv) == 0
        assert "downloaded 1, packed 1" in capsys.readouterr().out
        assert main(["fetch", links, str(src), "--shards", "7", "--quiet"]) == 2
        assert "has no link for sa_000007" in capsys.readouterr().err
    assert tools.same_contents(read_manifest(dst)["shards"]) == tools.same_contents(
        {k: direct[k] for k in ("sa_000000", "sa_000001")}
    )
    assert tars_left(src) == []


INTERRUPTED_RUN = """
import signal
# Ctrl-C raises KeyboardInterrupt as in a terminal, even when the tests run as a background
# job, whose children start with SIGINT ignored (and Python then keeps it ignored).
signal.signal(signal.SIGINT, signal.default_int_handler)
from sa1b_pack.fetch import download
from sa1b_pack.fetch.run import fetch
download.CHUNK = 4096
http = download.Http(timeout={timeout})  # a read stalled at Ctrl-C ends after this
fetch({links!r}, {src!r}, [0, 1, 2, 3], store={dst!r}, delete_tars=True, jobs=2, http=http,
      progress=False)
"""


def test_ctrl_c_then_rerun_resumes(origin: Path, direct: dict, tmp_path: Path, tools) -> None:
    """Every GET stalls part way (each retry adds a quarter of what is left), so no shard can
    finish before the Ctrl-C: it lands mid-file whatever the machine's load."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    faults = Faults(stalls=Counter({f"sa_{i:06d}": 1000 for i in SHARDS}))
    with serve(origin, faults) as base:
        links = links_file(tmp_path / "links.txt", base)
        script = INTERRUPTED_RUN.format(
            links=str(links), src=str(src), dst=str(dst), timeout=STALL_TIMEOUT
        )
        run = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while not any(p.stat().st_size for p in src.glob("*.part")):
            assert run.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        run.send_signal(signal.SIGINT)
        _, err = run.communicate(timeout=30)
        assert run.returncode != 0 and b"KeyboardInterrupt" in err
        parts = {p.name.split(".")[0]: p.stat().st_size for p in src.glob("*.part")}
        parts = {name: size for name, size in parts.items() if size}  # those with bytes resume
        assert parts  # stopped mid-file

        faults.stalls.clear()
        faults.ranges[:] = []
        report = fetch(links, src, SHARDS, store=dst, delete_tars=True, http=FAST, progress=False)
        assert report.ok
        assert {(name, f"bytes={size}-") for name, size in parts.items()} <= set(faults.ranges)
    assert tools.same_contents(read_manifest(dst)["shards"]) == tools.same_contents(direct)
    assert tars_left(src) == []

"""Progress bars: drawn on a terminal, plain lines (no carriage returns, no escapes) off one."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from sa1b_pack import progress

CONTROL = re.compile(r"[\r\x1b]")  # a redraw: carriage return or an ANSI escape sequence
SYNTH = [sys.executable, "-m", "sa1b_pack", "synth", "--shards", "0-1", "--small"]
SYNTH += ["--images-per-shard", "3"]


def test_off_a_terminal_plain_lines_and_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    monkeypatch.setattr(progress, "LOG_EVERY", 0.0)  # a line on every update
    bar = progress.progress_bar(total=3, desc="work", unit="img", file=out)
    for k in range(3):
        bar.update(1)
        progress.say(f"message {k}", file=out)
    bar.close()
    bar.close()
    detail = progress.progress_bar(total=3, desc="detail", log=False, file=out)
    detail.update(3)
    detail.close()
    for _ in progress.progress_bar(range(2), desc="loop", file=out):
        pass
    off = progress.progress_bar(total=3, desc="off", enabled=False, file=out)
    off.update(3)
    off.close()
    lines = out.getvalue().splitlines()
    assert not CONTROL.search(out.getvalue()), repr(out.getvalue())
    assert [line.split(" [")[0] for line in lines] == [
        "work:  33% 1/3",
        "message 0",
        "work:  67% 2/3",
        "message 1",
        "work: 100% 3/3",
        "message 2",  # closing at 3/3 again says nothing new
        "loop:  50% 1/2",
        "loop: 100% 2/2",
    ]


def test_rare_lines_off_a_terminal() -> None:
    out = io.StringIO()
    bar = progress.progress_bar(total=1000, desc="work", file=out)  # LOG_EVERY: 60 s
    for _ in range(1000):
        bar.update(1)
    assert out.getvalue() == ""
    bar.close()
    assert out.getvalue().startswith("work: 100% 1000/1000 [")


def test_synth_logs_no_redraws_to_a_pipe(tmp_path: Path) -> None:
    result = subprocess.run([*SYNTH, str(tmp_path)], capture_output=True, text=True, check=True)
    assert not CONTROL.search(result.stderr), repr(result.stderr)
    assert re.fullmatch(r"synth: 100% 6/6 \[.*img/s\]\n", result.stderr), repr(result.stderr)


def test_synth_draws_a_bar_on_a_terminal(tmp_path: Path) -> None:
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 0x0 at first
    try:
        run = subprocess.Popen([*SYNTH, str(tmp_path)], stderr=follower, stdout=subprocess.PIPE)
    finally:
        os.close(follower)
    drawn = b""
    try:
        while chunk := os.read(leader, 4096):
            drawn += chunk
    except OSError:  # EIO: the child closed its end
        pass
    finally:
        os.close(leader)
    assert run.wait(timeout=60) == 0
    assert b"\r" in drawn and b"synth: 100%" in drawn, drawn
    assert "|" in drawn.decode(errors="replace").split("synth: 100%")[-1]  # the bar itself

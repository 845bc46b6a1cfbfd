"""The command line: synth -> pack -> info, and one-line errors with exit code 2."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from sa1b_pack import open_store
from sa1b_pack.cli import EPILOG, build_parser, main
from sa1b_pack.format.files import FORMAT_VERSION
from sa1b_pack.store.manifest import read_manifest


def test_synth_pack_info(tmp_path: Path, capsys: pytest.CaptureFixture[str], tools) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    argv = ["synth", str(src), "--shards", "2-3", "--images-per-shard", "3", "--small"]
    assert main([*argv, "--layout", "folder", "--gzip", "--quiet"]) == 0
    assert "wrote 2 shards" in capsys.readouterr().out
    assert sorted(p.name for p in src.iterdir()) == ["sa_000002.tar", "sa_000003.tar"]
    assert (src / "sa_000002.tar").read_bytes()[:2] == b"\x1f\x8b"
    source = tools.read_source(src, [2, 3])
    assert len(source) == 6
    assert all(s.jpeg_member.startswith(f"{s.shard}/") for s in source)

    assert main(["pack", str(src), str(dst), "--quiet"]) == 0  # every shard in SRC
    out = capsys.readouterr().out
    masks = sum(len(s.doc["annotations"]) for s in source)
    assert f"packed 2 shards (6 images, {masks} masks)" in out
    assert "0 failed" in out and "0 members left out" in out
    store = open_store(dst)
    assert [(s.shard, s.image_id) for s in store] == [(s.shard, s.image_id) for s in source]

    assert main(["pack", str(src), str(dst), "--shards", "2-3", "--quiet"]) == 0
    assert "packed 0 shards (0 images, 0 masks), 2 already in the store" in capsys.readouterr().out

    assert main(["info", str(dst)]) == 0
    info = dict(
        re.split(r"\s{2,}", line.strip(), maxsplit=1)
        for line in capsys.readouterr().out.splitlines()
    )
    assert info["shards"] == "2" and info["images"] == "6"
    assert info["masks"] == f"{masks:,}" and info["format_version"] == str(FORMAT_VERSION)
    assert info["skipped_members"] == "0"


def test_pack_exit_code_one_when_a_shard_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tools
) -> None:
    src = tmp_path / "src"
    tools.write_tar(src / "sa_000000.tar", tools.sample_members(1))
    tools.write_tar(
        src / "sa_000001.tar", [("sa_100001.jpg", b"no jpeg"), *tools.sample_members(100_001)[1:]]
    )
    assert main(["pack", str(src), str(tmp_path / "dst"), "--shards", "0-1", "--quiet"]) == 1
    captured = capsys.readouterr()
    assert "packed 1 shards" in captured.out and "1 failed" in captured.out
    assert "FAILED sa_000001.tar: sa_100001.jpg" in captured.err
    assert list(read_manifest(tmp_path / "dst")["shards"]) == ["sa_000000"]


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["pack", "{tmp}/absent", "{tmp}/dst", "--shards", "0-1"], "absent does not exist"),
        (["pack", "{tmp}/absent", "{tmp}/dst"], "absent"),
        (["pack", "{tmp}/empty", "{tmp}/dst"], "no sa_NNNNNN.tar shards"),
        (["pack", "{tmp}/empty", "{tmp}/dst", "--shards", "4"], "sa_000004.tar"),
        (["pack", "{tmp}/empty", "{tmp}/dst", "--shards", "3-1"], "bad shard range"),
        (["info", "{tmp}/empty"], "not a sa1b_pack store"),
    ],
)
def test_errors_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], match: str
) -> None:
    (tmp_path / "empty").mkdir()
    assert main([a.format(tmp=tmp_path) for a in argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("sa1b-pack: error: "), captured.err
    assert match in lines[0] and "Traceback" not in captured.err
    assert not (tmp_path / "dst" / "parts").exists()


def test_help_is_for_users_and_its_examples_parse(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "thin wrappers" not in out  # the module docstring is for developers
    assert "The usual sequence" in out and "examples:" in out
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for name in commands:
        assert re.search(rf"^\s+{name}\s+\S", out, re.MULTILINE), f"{name} missing from --help"
    examples = [line.strip() for line in EPILOG.splitlines() if line.startswith("  sa1b-pack ")]
    assert len(examples) >= 2
    for line in examples:
        args = parser.parse_args(shlex.split(line)[1:])  # exits 2 if an example went stale
        assert args.func is not None


def test_every_command_and_option_has_help() -> None:
    commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for name, command in commands.items():
        assert command.description, f"{name} --help has no description"
        for action in command._actions:
            assert action.help, f"{name} {action.dest}: no help text"

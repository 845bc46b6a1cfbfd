"""Tar shards: range parsing, locating files, member-name classification, streaming."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from sa1b_pack.source.shards import (
    ShardError,
    available_shards,
    classify,
    find_shards,
    iter_members,
    parse_shards,
)
from sa1b_pack.testing import synth


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("0-99", list(range(100))),
        ("3,7,10-12", [3, 7, 10, 11, 12]),
        ("5", [5]),
        ("12,3,3,2-4", [2, 3, 4, 12]),
        (" 1 , 4-5 ", [1, 4, 5]),
        ("7-7", [7]),
    ],
)
def test_parse_shards(spec: str, expected: list[int]) -> None:
    assert parse_shards(spec) == expected


@pytest.mark.parametrize("spec", ["", ",", "a", "5-3", "-1", "1-", "1-2-3", "1.5", "0x3", "3;4"])
def test_parse_shards_rejects(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_shards(spec)


def test_find_shards_lists_every_missing_file(tmp_path: Path) -> None:
    for i in (0, 2):
        (tmp_path / f"sa_{i:06d}.tar").write_bytes(b"")
    assert find_shards(tmp_path, [0, 2]) == {
        0: str(tmp_path / "sa_000000.tar"),
        2: str(tmp_path / "sa_000002.tar"),
    }
    with pytest.raises(FileNotFoundError) as info:
        find_shards(tmp_path, [0, 1, 2, 3])
    message = str(info.value)
    assert "sa_000001.tar" in message and "sa_000003.tar" in message
    assert "sa_000000.tar" not in message and "sa_000002.tar" not in message


def test_find_shards_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_shards(tmp_path / "nope", [0])


def test_available_shards(tmp_path: Path) -> None:
    for name in ("sa_000004.tar", "sa_000001.tar", "sa_1.tar", "sa_000002.tar.tmp", "x.tar"):
        (tmp_path / name).write_bytes(b"")
    assert available_shards(tmp_path) == [1, 4]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("sa_1.jpg", ("sa_1", "jpg")),
        ("sa_1.json", ("sa_1", "json")),
        ("./sa_223750.jpg", ("sa_223750", "jpg")),
        ("./sa_223750.json", ("sa_223750", "json")),
        ("sa_000000/sa_17.jpg", ("sa_17", "jpg")),
        ("./sa_000000/sa_17.json", ("sa_17", "json")),
    ],
)
def test_classify_sample_members(name: str, expected: tuple[str, str]) -> None:
    assert classify(name) == (*expected, None)


@pytest.mark.parametrize(
    "name",
    [
        "README.txt",
        "._sa_1.jpg",
        "sa_1.txt",
        "other/sa_1.jpg",
        "sa_000000/other/sa_1.jpg",
        "sa_1.jpeg",
        "sa_x.jpg",
        "sa_1.JPG",
        "sa_000000/",
        ".",
        "sa_1.jpg\n",
        "sa_000000\n/sa_1.jpg",
    ],
)
def test_classify_strays(name: str) -> None:
    key, kind, reason = classify(name)
    assert key is None and kind is None
    assert isinstance(reason, str) and reason


def read_plain(path: Path) -> list[tuple[str, str | None, str | None, bytes | None]]:
    return [(m.name, m.key, m.kind, m.data) for m in iter_members(path)]


@pytest.mark.parametrize("layout", ["root", "dot", "folder"])
def test_iter_members_in_tar_order(tmp_path: Path, layout: str, tools) -> None:
    path = synth.synth_shard(tmp_path, 4, 3, small=True, layout=layout)
    members = read_plain(path)
    names = [name for name, *_ in members]
    with tarfile.open(path) as tar:
        files = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers() if m.isfile()]
    assert names == [name for name, _ in files]
    assert [data for *_, data in members] == [data for _, data in files]
    for name, key, kind, _ in members:
        assert f"{key}.{kind}" == name.rsplit("/", 1)[-1]


def test_iter_members_gzip_by_magic(tmp_path: Path) -> None:
    plain = synth.synth_shard(tmp_path / "plain", 0, 3, small=True)
    gz = synth.synth_shard(tmp_path / "gz", 0, 3, small=True, gzip=True)
    assert gz.name == "sa_000000.tar" and gz.read_bytes()[:2] == b"\x1f\x8b"
    assert read_plain(gz) == read_plain(plain)


def test_iter_members_reports_strays(tmp_path: Path, tools) -> None:
    path = tools.write_tar(
        tmp_path / "sa_000000.tar",
        [("README.txt", b"hi"), *tools.sample_members(5), ("other/sa_5.jpg", b"x")],
    )
    members = list(iter_members(path))
    assert [(m.name, m.kind) for m in members] == [
        ("README.txt", None),
        ("sa_5.jpg", "jpg"),
        ("sa_5.json", "json"),
        ("other/sa_5.jpg", None),
    ]
    assert members[0].reason and members[0].data is None and members[3].reason


@pytest.mark.parametrize("gzip", [False, True])
@pytest.mark.parametrize("keep", [0.5, 0.02])
def test_iter_members_truncated_tar(tmp_path: Path, gzip: bool, keep: float) -> None:
    full = synth.synth_shard(tmp_path / "full", 7, 4, small=True, gzip=gzip)
    path = tmp_path / "sa_000007.tar"
    data = full.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ShardError) as info:
        for _ in iter_members(path):
            pass
    assert info.value.shard == "sa_000007.tar"
    assert "sa_000007.tar" in str(info.value)


def test_iter_members_tar_cut_at_a_member_boundary(tmp_path: Path) -> None:
    """A download cut exactly between members has no end-of-archive blocks: still truncated."""
    full = synth.synth_shard(tmp_path / "full", 7, 4, small=True)
    with tarfile.open(full) as tar:
        cut = tar.getmembers()[4].offset  # header of the fifth member
    path = tmp_path / "sa_000007.tar"
    path.write_bytes(full.read_bytes()[:cut])
    with pytest.raises(ShardError, match=r"sa_000007\.tar"):
        list(iter_members(path))


def test_iter_members_not_a_tar(tmp_path: Path) -> None:
    path = tmp_path / "sa_000001.tar"
    path.write_bytes(b"this is not a tar file at all" * 100)
    with pytest.raises(ShardError, match=r"sa_000001\.tar"):
        list(iter_members(path))

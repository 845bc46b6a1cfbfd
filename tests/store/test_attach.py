"""Attached arrays: from a function and from a folder of .npy files, every row equal to what was
given; missing files; kill -9 mid-attach then resume; verify catching a flipped byte; detach;
info; a store on loopback S3 (read by range and through the part cache)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from sa1b_pack import open_store, pack, verify
from sa1b_pack.cli import main
from sa1b_pack.errors import ConfigError, StoreError
from sa1b_pack.store.manifest import read_manifest
from sa1b_pack.write.attach import attach, attach_dir, detach

SHAPE = (4, 8, 8)


def teacher(image_id: int) -> np.ndarray:
    """The array an image gets: a function of its id alone."""
    return np.random.default_rng(image_id).normal(size=SHAPE).astype(np.float16)


def embed(sample) -> np.ndarray:
    return teacher(sample.image_id)


@pytest.fixture
def store_dir(packed_dir: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "store"
    shutil.copytree(packed_dir, dst)
    return dst


def assert_every_row(root, name: str = "teacher", missing: set[int] = frozenset()) -> None:
    store = open_store(root)
    for i in range(len(store)):
        s = store[i]
        row = s.attached(name)
        assert row.dtype == np.float16 and row.shape == SHAPE and not row.flags.writeable
        want = np.zeros(SHAPE, np.float16) if s.image_id in missing else teacher(s.image_id)
        assert np.array_equal(row, want), s.image_id
        assert s.attached_present(name) == (s.image_id not in missing)


def attached_files(root: Path) -> list[str]:
    return sorted(p.name for p in root.glob("parts/*/attached/*"))


def listed_files(root: Path) -> list[str]:
    shards = read_manifest(root)["shards"].values()
    return sorted(
        a["file"].rsplit("/", 1)[1] for e in shards for a in e.get("attached", {}).values()
    )


def test_attach_from_a_function(store_dir: Path) -> None:
    report = attach(store_dir, "teacher", embed, jobs=2, progress=False)
    assert report.attached == open_store(store_dir).shards and not report.already
    assert (report.dtype, report.shape, report.missing) == ("<f2", SHAPE, [])
    assert_every_row(store_dir)
    manifest = read_manifest(store_dir)
    assert manifest["attached"] == {"teacher": {"dtype": "<f2", "shape": list(SHAPE),
                                                "nbytes": 2 * int(np.prod(SHAPE))}}  # fmt: skip
    assert verify(store_dir, progress=False) == []
    again = attach(store_dir, "teacher", embed, progress=False)  # every shard has it: nothing
    assert not again.attached and again.already == report.attached
    assert attached_files(store_dir) == listed_files(store_dir)


def test_attach_from_a_folder_and_missing_files(store_dir: Path, tmp_path: Path) -> None:
    store = open_store(store_dir)
    ids = [store[i].image_id for i in range(len(store))]
    folder = tmp_path / "npy"
    folder.mkdir()
    gone = set(ids[1:15])  # 14 missing: the message names 10 and counts the rest
    for image_id in ids:
        if image_id not in gone:
            np.save(folder / f"{image_id}.npy", teacher(image_id))
    with pytest.raises(ValueError, match=r"14 images \(of 27\) have no <image_id>.npy") as info:
        attach_dir(store_dir, "teacher", folder, progress=False)
    message = str(info.value)
    assert ", ".join(map(str, ids[1:11])) in message and "and 4 more" in message
    assert "attached" not in read_manifest(store_dir) and not attached_files(store_dir)

    report = attach_dir(store_dir, "teacher", folder, allow_missing=True, progress=False)
    assert sorted(report.missing) == sorted(gone)
    assert_every_row(store_dir, missing=gone)
    shards = read_manifest(store_dir)["shards"].values()
    assert sorted(i for e in shards for i in e["attached"]["teacher"]["missing"]) == sorted(gone)


def test_every_image_gets_one_dtype_and_shape(store_dir: Path) -> None:
    def odd(sample):
        return np.zeros((3,), np.float16) if sample.image_id == second else embed(sample)

    second = open_store(store_dir)[1].image_id
    with pytest.raises(ValueError, match=f"image {second} .* gave float16 \\(3,\\)"):
        attach(store_dir, "teacher", odd, progress=False)
    assert "attached" not in read_manifest(store_dir)
    with pytest.raises(ConfigError, match="letters, digits"):
        attach(store_dir, "no-dash", embed, progress=False)


def test_verify_catches_a_flipped_byte(store_dir: Path) -> None:
    attach(store_dir, "teacher", embed, progress=False)
    path = next(store_dir.glob("parts/sa_000001/attached/teacher-*.bin"))
    data = bytearray(path.read_bytes())
    data[1000] ^= 0x10
    path.write_bytes(bytes(data))
    problems = verify(store_dir, progress=False)
    assert len(problems) == 1 and problems[0].startswith("sa_000001: attached/teacher-")
    assert "sha256 differs" in problems[0]


def test_detach(store_dir: Path) -> None:
    attach(store_dir, "teacher", embed, progress=False)
    attach(store_dir, "other", lambda s: np.int32(s.image_id), progress=False)
    assert detach(store_dir, "teacher") == open_store(store_dir).shards
    manifest = read_manifest(store_dir)
    assert list(manifest["attached"]) == ["other"]
    assert attached_files(store_dir) == listed_files(store_dir) and all(
        f.startswith("other-") for f in attached_files(store_dir)
    )
    store = open_store(store_dir)
    assert store[3].attached("other") == store[3].image_id
    with pytest.raises(StoreError, match="no attached array 'teacher'"):
        store[0].attached("teacher")
    with pytest.raises(StoreError, match="no attached array 'teacher'"):  # one error for both
        detach(store_dir, "teacher")
    detach(store_dir, "other")
    assert "attached" not in read_manifest(store_dir) and verify(store_dir, progress=False) == []


def test_a_shard_packed_after_the_attach(source_dir: Path, tmp_path: Path) -> None:
    dst = tmp_path / "store"
    assert pack(source_dir, dst, [0, 1], progress=False).ok
    attach(dst, "teacher", embed, progress=False)
    assert pack(source_dir, dst, [2], progress=False).ok
    with pytest.raises(StoreError, match="attach it"):
        open_store(dst)[len(open_store(dst)) - 1].attached("teacher")
    report = attach(dst, "teacher", embed, progress=False)
    assert report.attached == ["sa_000002"] and report.already == ["sa_000000", "sa_000001"]
    assert_every_row(dst)


ATTACH_SCRIPT = textwrap.dedent("""
    from tests.store.test_attach import teacher
    from sa1b_pack.storage.faults import crash_point
    from sa1b_pack.write.attach import attach

    def computed(sample):
        crash_point("attach-fn")  # SA1B_PACK_CRASH_AT=attach-fn@k: killed at the k-th array
        return teacher(sample.image_id)

    attach({store!r}, "teacher", computed, jobs=2, progress=False)
""")


def run_attach(store: Path, crash_at: str | None = None) -> subprocess.Popen:
    code = ATTACH_SCRIPT.format(store=str(store))
    env = {**os.environ, "SA1B_PACK_CRASH_AT": crash_at or ""}
    root = str(Path(__file__).resolve().parents[2])  # this checkout's sa1b_pack first
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    return subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE)


def committed(root: Path) -> list[str]:
    shards = read_manifest(root)["shards"]
    return sorted(n for n, e in shards.items() if "teacher" in e.get("attached", {}))


@pytest.mark.parametrize(("crash_at", "done"), [("attach-written@2", 1),
                                                ("attach-committed@2", 2)])  # fmt: skip
def test_kill_at_a_commit_step_then_resume(store_dir: Path, crash_at: str, done: int) -> None:
    proc = run_attach(store_dir, crash_at)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, err.decode()
    assert len(committed(store_dir)) == done
    assert verify(store_dir, progress=False) == []  # committed parts whole, nothing else listed
    report = attach(store_dir, "teacher", embed, progress=False)
    assert len(report.already) == done and len(report.attached) == 3 - done
    assert_every_row(store_dir)
    assert attached_files(store_dir) == listed_files(store_dir)  # the killed run's file: gone


def test_kill_while_computing_a_part_then_resume(store_dir: Path) -> None:
    """Killed between commit steps: at the 14th of 27 arrays, i.e. mid-way through the second
    part (9 images each, computed part after part), some of its rows already written."""
    proc = run_attach(store_dir, "attach-fn@14")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, err.decode()
    assert committed(store_dir) == ["sa_000000"]
    assert verify(store_dir, progress=False) == []
    attach(store_dir, "teacher", embed, progress=False)
    assert_every_row(store_dir)
    assert attached_files(store_dir) == listed_files(store_dir)


def test_cli_attach_info_detach(store_dir: Path, tmp_path: Path, capsys) -> None:
    store = open_store(store_dir)
    folder = tmp_path / "npy"
    folder.mkdir()
    for i in range(len(store) - 1):
        np.save(folder / f"{store[i].image_id}.npy", teacher(store[i].image_id))
    last = store[len(store) - 1].image_id
    assert main(["attach", str(store_dir), "teacher", "--from", str(folder), "--quiet"]) == 2
    assert f"image ids {last};" in capsys.readouterr().err
    argv = ["attach", str(store_dir), "teacher", "--from", str(folder), "--allow-missing"]
    assert main([*argv, "--quiet"]) == 0
    assert "1 images without an array" in capsys.readouterr().out
    assert main(["info", str(store_dir)]) == 0
    row = 2 * int(np.prod(SHAPE))
    assert (f"attached teacher: <f2 4x8x8, {row:,} bytes per image, {27 * row:,} bytes in 3 of "
            "3 shards, 1 images without one (zeros)") in capsys.readouterr().out  # fmt: skip
    assert main(["detach", str(store_dir), "teacher"]) == 0
    assert main(["info", str(store_dir)]) == 0
    assert "attached" not in capsys.readouterr().out


def test_a_store_on_s3(s3_endpoint: str, source_dir: Path, tmp_path: Path) -> None:
    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=s3_endpoint, skip_instance_cache=True)
    fs.mkdir("bucket")
    url = "s3://bucket/store"
    assert pack(source_dir, url, [0, 1, 2], progress=False).ok
    cache = {"cache_dir": tmp_path / "cache", "cache_bytes": 10**8}
    cached = open_store(url, **cache)
    cached.part(0)  # part 0 cached before the attach: its array is fetched when asked for
    attach(url, "teacher", embed, jobs=2, progress=False)
    assert_every_row(url)  # by range
    far = open_store(url)
    sample = far[5]  # the part's images table: fetched on first touch
    before = far.storage.stats.requests
    sample.attached("teacher")
    assert far.storage.stats.requests == before + 1  # one range request per row
    for i in range(len(open_store(url, **cache))):
        s = open_store(url, **cache)[i]
        assert np.array_equal(s.attached("teacher"), teacher(s.image_id))
    assert verify(url, progress=False) == []
    part = fs.ls(f"bucket/store/{far.manifest['shards']['sa_000001']['path']}/attached")[0]
    data = bytearray(fs.cat_file(part))
    data[0] ^= 1
    fs.pipe_file(part, bytes(data))
    assert any("sha256 differs" in p for p in verify(url, progress=False))
    detach(url, "teacher")
    assert not fs.find(f"bucket/store/{far.manifest['shards']['sa_000001']['path']}/attached")
    assert json.loads(fs.cat_file(sorted(fs.ls("bucket/store/manifests"))[-1])).get(
        "attached") is None  # fmt: skip

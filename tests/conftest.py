"""Shared fixtures: a small synthetic multi-shard source, its packed store, and the source
read back independently (tarfile + orjson), so every test compares the store to the tars."""

from __future__ import annotations

import gzip as gzip_lib
import io
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import orjson
import pytest
import simplejpeg

from sa1b_pack.testing import synth
from sa1b_pack.write.packer import pack

SOURCE_SHARDS = [0, 1, 2]
IMAGES_PER_SHARD = 9
# pycocotools 2.0.11 decode under numpy 2 warns about its own __array__; not ours to fix.
PYCOCO_WARNING = "ignore:__array__ implementation:DeprecationWarning"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("filterwarnings", PYCOCO_WARNING)


@dataclass
class SourceImage:
    """One image as the tar holds it: member names, raw bytes and the parsed JSON."""

    shard: str
    jpeg_member: str
    json_member: str
    jpeg: bytes
    doc: dict

    @property
    def image_id(self) -> int:
        return self.doc["image"]["image_id"]


def read_source(src: Path, shards: Iterable[int]) -> list[SourceImage]:
    """Every image of the shards, paired by basename, in store order (shard, then image id)."""
    images = []
    for index in sorted(shards):
        shard = f"sa_{index:06d}"
        members: dict[str, dict[str, tuple[str, bytes]]] = {}
        with tarfile.open(src / f"{shard}.tar", "r:*") as tar:
            for info in tar.getmembers():
                if info.isfile():
                    stem, ext = info.name.rsplit("/", 1)[-1].rsplit(".", 1)
                    members.setdefault(stem, {})[ext] = (info.name, tar.extractfile(info).read())
        found = []
        for pair in members.values():
            (jpeg_member, jpeg), (json_member, raw) = pair["jpg"], pair["json"]
            found.append(SourceImage(shard, jpeg_member, json_member, jpeg, orjson.loads(raw)))
        images += sorted(found, key=lambda s: s.image_id)
    return images


def write_tar(path: Path, members: Iterable[tuple[str, bytes]], *, gzip: bool = False) -> Path:
    """A tar of (name, data) members in the given order, optionally gzip'd under its name."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    data = buffer.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip_lib.compress(data, mtime=0) if gzip else data)
    return path


def tiny_jpeg(height: int, width: int, seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return simplejpeg.encode_jpeg(pixels, quality=90, colorspace="RGB")


def same_contents(shards: dict) -> dict:
    """Manifest shard entries without the source files' mtimes: equal for two stores packed
    from copies of the same tars (a download, an upload) made at different times."""
    return {
        name: {**entry, "source": {k: v for k, v in entry["source"].items() if k != "mtime"}}
        for name, entry in shards.items()
    }


def sample_pair(image_id: int, seed: int = 0, n_masks: int | None = None) -> tuple[bytes, dict]:
    """A small synthetic (jpeg, annotation dict) with the given image id."""
    return synth.synth_sample(np.random.default_rng(seed), image_id, small=True, n_masks=n_masks)


def sample_members(image_id: int, seed: int = 0, prefix: str = "") -> list[tuple[str, bytes]]:
    jpeg, doc = sample_pair(image_id, seed)
    return [
        (f"{prefix}sa_{image_id}.jpg", jpeg),
        (f"{prefix}sa_{image_id}.json", orjson.dumps(doc)),
    ]


@pytest.fixture(scope="session", autouse=True)
def user_index_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Eligible indices of stores with no folder of their own go here, not to ~/.cache."""
    folder = tmp_path_factory.mktemp("index-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SA1B_PACK_INDEX_DIR", str(folder))
        yield folder


@pytest.fixture(scope="session")
def source_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("source")
    synth.synth_shards(src, SOURCE_SHARDS, IMAGES_PER_SHARD, small=True, seed=3, progress=False)
    return src


@pytest.fixture(scope="session")
def source_images(source_dir: Path) -> list[SourceImage]:
    return read_source(source_dir, SOURCE_SHARDS)


@pytest.fixture(scope="session")
def packed_dir(source_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The packed store of ``source_dir``. Treat as read-only: copy it before packing again."""
    dst = tmp_path_factory.mktemp("store") / "store"
    report = pack(source_dir, dst, SOURCE_SHARDS, progress=False)
    assert report.ok and report.packed == [f"sa_{i:06d}" for i in SOURCE_SHARDS], report
    return dst


@pytest.fixture(scope="session")
def tools() -> SimpleNamespace:
    """The helpers above, for test modules (conftest is not imported by name)."""
    return SimpleNamespace(
        read_source=read_source,
        write_tar=write_tar,
        tiny_jpeg=tiny_jpeg,
        sample_pair=sample_pair,
        sample_members=sample_members,
        same_contents=same_contents,
        SourceImage=SourceImage,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def s3_endpoint(monkeypatch: pytest.MonkeyPatch):
    """An S3-compatible server (moto) in a separate process on loopback; fsspec pointed at it."""
    import fsspec

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "moto did not start"
                time.sleep(0.05)
        for key, value in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "FSSPEC_S3_ENDPOINT_URL": url,
        }.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setitem(fsspec.config.conf, "s3", {"endpoint_url": url})
        fsspec.filesystem("s3").clear_instance_cache()
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)

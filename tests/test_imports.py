"""The light commands stay light: ``--help``, ``info``, ``errors`` and ``fetch`` without
``--pack`` import none of the heavy dependencies, each checked in a fresh interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

HEAVY = ("numba", "cv2", "simplejpeg", "pyarrow", "torch", "pycocotools")
RUN = f"""
import json, sys
from sa1b_pack.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:  # --help exits
    code = exc.code
loaded = sorted({{name.split(".")[0] for name in sys.modules}} & set({HEAVY!r}))
print(json.dumps({{"code": code, "heavy": loaded}}))
"""


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def links(tmp_path: Path) -> Iterator[Path]:
    """A links file naming one small file on a loopback HTTP server (fetch does not open it)."""
    served = tmp_path / "served"
    served.mkdir()
    (served / "sa_000000.tar").write_bytes(os.urandom(10_000))
    handler = partial(QuietHandler, directory=str(served))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/sa_000000.tar"
    path = tmp_path / "links.txt"
    path.write_text(f"file_name\tcdn_link\nsa_000000.tar\t{url}\n")
    try:
        yield path
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def run_cli(argv: list[str]) -> tuple[int, list[str], str]:
    """(exit code, heavy modules loaded, output) of ``sa1b-pack ARGV`` in a fresh interpreter."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "all_proxy")}
    result = subprocess.run(
        [sys.executable, "-c", RUN, *argv], capture_output=True, text=True, env=env, timeout=120
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0 and result.stdout.strip(), output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    return report["code"], report["heavy"], output


@pytest.mark.parametrize("command", ["--help", "info", "errors", "fetch"])
def test_light_commands_import_no_heavy_dependency(
    command: str, packed_dir: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if command == "--help":
        argv, expect = ["--help"], "The usual sequence"
    elif command in ("info", "errors"):
        argv, expect = (
            [command, str(packed_dir)],
            "problems recorded" if command == "errors" else "",
        )
        expect = expect or "format_version"
    else:
        links = request.getfixturevalue("links")
        argv, expect = ["fetch", str(links), str(tmp_path / "tars")], "downloaded 1, packed 0"
    code, heavy, output = run_cli(argv)
    shown = "sa1b-pack " + " ".join(argv)
    assert code == 0, f"`{shown}` failed:\n{output}"
    assert expect in output, f"`{shown}` did not say {expect!r}:\n{output}"
    assert not heavy, f"`{shown}` imported {', '.join(heavy)}"


LIGHT_IMPORT = f"""
import json, sys
import sa1b_pack, sa1b_pack.fetch
names = sorted(set(dir(sa1b_pack)) & set(sa1b_pack.__all__))
loaded = sorted({{name.split(".")[0] for name in sys.modules}} & set({HEAVY!r}))
print(json.dumps({{"names": names, "heavy": loaded}}))
"""


def test_import_sa1b_pack_is_light_and_lists_every_public_name() -> None:
    result = subprocess.run(
        [sys.executable, "-c", LIGHT_IMPORT], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["heavy"] == [], f"import sa1b_pack loaded {report['heavy']}"
    import sa1b_pack

    assert report["names"] == sorted(sa1b_pack.__all__)  # dir() shows what __all__ promises


PUBLIC = {
    "sa1b_pack": [
        "open_store", "Store", "Sample", "pack", "Packer", "PackReport", "verify", "attach",
        "attach_dir", "detach", "find_shards", "parse_shards", "FORMAT_VERSION",
        "save_sample_png", "SA1BPackError", "StoreError", "ConfigError", "AnnotationError",
        "ShardError",
    ],
    "sa1b_pack.fetch": ["fetch", "FetchReport", "Http", "Log", "read_links", "DownloadError",
                        "DiskSpaceError", "ExpiredLinksError"],
}  # fmt: skip


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_public_names_import_from_the_package(module: str) -> None:
    import importlib

    package = importlib.import_module(module)
    for name in PUBLIC[module]:
        assert name in package.__all__, f"{module}.__all__ lacks {name}"
        assert getattr(package, name) is not None, f"{module}.{name}"
    with pytest.raises(AttributeError, match="no attribute 'nonesuch'"):
        package.nonesuch  # noqa: B018


def test_torch_names_import_from_sa1b_pack_torch() -> None:
    pytest.importorskip(
        "torch", reason="sa1b_pack.torch needs torch (pip install sa1b-pack[torch])"
    )
    from sa1b_pack import torch as entry
    from sa1b_pack.train.transforms import Compose

    for name in ["SA1BDataset", "SA1BLoader", "SA1BSampler", "Recipe", "collate",
                 "HorizontalFlip", "ResizeJitter", "Compose", "SampleError"]:  # fmt: skip
        assert name in entry.__all__ and getattr(entry, name) is not None, name
    assert entry.Compose is Compose


def test_every_library_error_is_one_catchable_family() -> None:
    from sa1b_pack import errors
    from sa1b_pack.fetch import DiskSpaceError, DownloadError, ExpiredLinksError
    from sa1b_pack.source.shards import ShardError, TarDamage

    for cls in (errors.StoreError, errors.ConfigError, errors.AnnotationError, ShardError,
                TarDamage, DownloadError, DiskSpaceError, ExpiredLinksError):  # fmt: skip
        assert issubclass(cls, errors.SA1BPackError), cls
    for cls in (errors.ConfigError, errors.AnnotationError, ExpiredLinksError):
        assert issubclass(cls, ValueError), f"{cls} must stay a ValueError"


def test_bad_arguments_raise_config_error(packed_dir: Path) -> None:
    from sa1b_pack import ConfigError, open_store, parse_shards

    with pytest.raises(ConfigError, match="bad shard range"):
        parse_shards("7-x")
    with pytest.raises(ConfigError, match="cache_dir needs cache_bytes"):
        open_store(packed_dir, cache_dir=packed_dir)
    with pytest.raises(ConfigError, match="give size or longest"):
        open_store(packed_dir)[0].masks(size=(4, 4), longest=8)


def test_version_python_m_and_py_typed() -> None:
    """``sa1b-pack --version`` (installed metadata), ``python -m sa1b_pack`` runs the same
    command, the CLI does not import sa1b_pack.testing, and py.typed ships with the package."""
    from importlib.metadata import version
    from importlib.resources import files

    result = subprocess.run([sys.executable, "-m", "sa1b_pack", "--version"],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"sa1b-pack {version('sa1b-pack')}"
    code = "import sys, sa1b_pack.cli; print('sa1b_pack.testing' in sys.modules)"
    probe = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert probe.stdout.strip() == "False", probe.stderr
    assert files("sa1b_pack").joinpath("py.typed").is_file()

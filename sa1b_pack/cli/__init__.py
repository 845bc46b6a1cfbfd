"""The ``sa1b-pack`` command (also ``python -m sa1b_pack``): its options, declared here once
each, and the dispatch to ``commands.py``. The user-facing text is ``DESCRIPTION`` and
``EPILOG`` below."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from . import commands

DESCRIPTION = """\
Pack Meta's SA-1B dataset (tar shards of JPEGs + COCO-RLE JSON) into a store of Parquet
tables and memory-mapped files that serves any sample by index, fast, for training.

The usual sequence:
  synth or fetch   get SA-1B-format tar shards (synthetic ones, or Meta's, from its links file)
  pack             pack the shards into a store (resumable; fetch --pack does it as they land)
  info, verify     what the store holds; check its files and masks (and against the tars)
  attach, detach   add or remove one array per image (teacher embeddings for distillation)
  show             draw one sample with its masks to a PNG
Run 'sa1b-pack COMMAND --help' for a command's options.
"""

EPILOG = """\
examples:
  sa1b-pack synth demo/src --shards 0-1 --images-per-shard 8 --small
  sa1b-pack fetch sa1b_links.txt /data/sa1b_tars --shards 0-99 --pack /data/sa1b --delete-tars
  sa1b-pack pack /data/sa1b_tars /data/sa1b --shards 0-99 --jobs 4 --image-longest 1024
  sa1b-pack verify /data/sa1b --source /data/sa1b_tars --sample 0.01
  sa1b-pack attach /data/sa1b teacher --from /data/vit_h_embeddings
"""


def _command(sub: Any, name: str, summary: str) -> argparse.ArgumentParser:
    """A subcommand whose one-line summary shows in both the command list and its --help."""
    return sub.add_parser(name, help=summary, description=summary)


def _jobs_and_quiet(command: argparse.ArgumentParser, default: int, what: str) -> None:
    """The two options every long-running command shares, declared once."""
    command.add_argument("--jobs", type=int, default=default, help=f"{what} (default: {default})")
    command.add_argument("--quiet", action="store_true", help="no progress bars")


def _version() -> str:
    try:
        return version("sa1b-pack")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sa1b-pack",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = _command(sub, "pack", "pack tar shards into a store (resumable)")
    p.add_argument("src", help="folder holding sa_NNNNNN.tar shards")
    p.add_argument("store", help="store folder (created if missing)")
    p.add_argument("--shards", help="e.g. 0-99 or 3,7,10-12 (default: every shard in SRC)")
    _jobs_and_quiet(p, 1, "shards packed in parallel")
    p.add_argument(
        "--image-longest",
        type=int,
        metavar="L",
        help="also store every image resized to longest side L (JPEG q90) for training",
    )
    p.add_argument(
        "--on-error",
        choices=["fail", "skip"],
        default="fail",
        help="fail: a bad sample fails its shard (default); skip: leave it out and record it",
    )
    p.add_argument(
        "--subset",
        metavar="FILE",
        help="pack only the images listed in FILE (ids or sa_N.jpg names, one per line)",
    )
    p.add_argument(
        "--repack",
        action="store_true",
        help="re-pack committed shards whose tar changed since (damaged ones are re-packed "
        "anyway when their tar changes)",
    )
    p.add_argument(
        "--backend", choices=["loky", "dask"], default="loky", help="where shards are packed"
    )
    p.add_argument("--scheduler", help="Dask scheduler address, e.g. tcp://head:8786")
    p.set_defaults(func=commands.cmd_pack)

    f = _command(sub, "fetch", "download shards from Meta's links file, pack as they land")
    f.add_argument("links", help="Meta's links file: file_name<TAB>cdn_link, a header line")
    f.add_argument("src", help="folder for the tars (created if missing)")
    f.add_argument("--shards", help="e.g. 0-99 or 3,7,10-12 (default: every shard listed)")
    _jobs_and_quiet(f, 4, "parallel downloads")
    f.add_argument("--retries", type=int, default=5, help="failed attempts in a row per file")
    f.add_argument("--timeout", type=float, default=60, help="seconds to connect, between reads")
    f.add_argument("--pack", metavar="DST", help="pack each shard into store DST as it lands")
    f.add_argument(
        "--delete-tars",
        action="store_true",
        help="delete each tar once its shard is committed and verified (needs --pack)",
    )
    f.add_argument("--pack-jobs", type=int, default=1, help="shards packed in parallel")
    f.add_argument("--image-longest", type=int, metavar="L", help="as for pack")
    f.add_argument("--on-error", choices=["fail", "skip"], default="fail", help="as for pack")
    f.add_argument("--force", action="store_true", help="start even if the disk looks too small")
    f.set_defaults(func=commands.cmd_fetch)

    s = _command(sub, "synth", "write synthetic SA-1B-format shards (for trying things out)")
    s.add_argument("out", help="folder for the tars (created if missing)")
    s.add_argument("--shards", default="0", help="e.g. 0-1 or 3,7 (default: 0)")
    s.add_argument("--images-per-shard", type=int, default=20, help="default: 20")
    s.add_argument("--small", action="store_true", help="small images, few masks (tests)")
    s.add_argument("--seed", type=int, default=0, help="same seed, same bytes (default: 0)")
    s.add_argument(
        "--layout",
        choices=["root", "dot", "folder"],
        default="root",
        help="member names: sa_1.jpg, ./sa_1.jpg or sa_000000/sa_1.jpg (default: root)",
    )
    s.add_argument("--gzip", action="store_true", help="gzip the tar, keeping the .tar name")
    _jobs_and_quiet(s, 1, "shards written in parallel")
    s.set_defaults(func=commands.cmd_synth)

    i = _command(sub, "info", "shards, images, masks, bytes, format version")
    i.add_argument("store", help="store folder")
    i.set_defaults(func=commands.cmd_info)

    e = _command(
        sub,
        "errors",
        "what packing left out or found: failed shards, damaged tars, bad samples, warnings",
    )
    e.add_argument("store", help="store folder")
    e.set_defaults(func=commands.cmd_errors)

    v = _command(sub, "verify", "check files, offsets, masks; with --source, the tars too")
    v.add_argument("store", help="store folder")
    v.add_argument("--source", help="folder of the source tars: compare samples with them")
    v.add_argument("--sample", type=float, default=1.0, help="share of images compared (0-1]")
    _jobs_and_quiet(v, 1, "shards checked in parallel")
    v.set_defaults(func=commands.cmd_verify)

    a = _command(sub, "attach", "attach one array per image (e.g. teacher embeddings)")
    a.add_argument("store", help="store folder or URL")
    a.add_argument("name", help="the array's name: letters, digits, _ (a batch key in training)")
    a.add_argument("--from", dest="source", required=True, metavar="DIR",
                   help="folder of <image_id>.npy files, one dtype and shape for all")  # fmt: skip
    a.add_argument("--allow-missing", action="store_true",
                   help="images without a file get zeros, recorded in the manifest")  # fmt: skip
    _jobs_and_quiet(a, 1, "threads reading the files")
    a.set_defaults(func=commands.cmd_attach)

    d = _command(sub, "detach", "remove an attached array and its files")
    d.add_argument("store", help="store folder or URL")
    d.add_argument("name", help="the attached array's name")
    d.set_defaults(func=commands.cmd_detach)

    v = _command(sub, "show", "render one image with its largest masks as a PNG")
    v.add_argument("store", help="store folder")
    v.add_argument("index", type=int, help="sample index in the store (negative from the end)")
    v.add_argument("--out", default="sample.png", help="PNG to write (default: sample.png)")
    v.add_argument("--max-masks", type=int, default=50, help="largest masks shown, by area")
    v.add_argument("--scale", type=float, help="resize factor (default: long side <= 1500 px)")
    v.set_defaults(func=commands.cmd_show)
    return parser


def _user_errors() -> tuple[type[Exception], ...]:
    """Errors that are the user's to fix, shown as one line. Imported only once something is
    raised, so that ``--help`` and ``fetch`` do not load the store package."""
    from ..errors import SA1BPackError

    return (SA1BPackError, FileNotFoundError, ValueError)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except Exception as exc:
        if not isinstance(exc, _user_errors()):
            raise
        print(f"sa1b-pack: error: {exc}", file=sys.stderr)
        return 2

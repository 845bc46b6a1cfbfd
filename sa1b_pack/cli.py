"""The ``sa1b-pack`` command: thin wrappers over the Python API.

Each command imports what it needs when it runs, so ``--help`` and the light commands stay
quick; the user-facing text is ``DESCRIPTION`` and ``EPILOG`` below.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from .source.shards import ShardError, available_shards, parse_shards


def _cmd_pack(args: argparse.Namespace) -> int:
    from .write.packer import pack

    shards = parse_shards(args.shards) if args.shards else available_shards(args.src)
    if not shards:
        raise FileNotFoundError(f"no sa_NNNNNN.tar shards in {args.src}")
    report = pack(
        args.src,
        args.dst,
        shards,
        jobs=args.jobs,
        progress=not args.quiet,
        image_longest=args.image_longest,
        on_error=args.on_error,
        backend=args.backend,
        scheduler=args.scheduler,
        repack=args.repack,
        subset=args.subset,
    )
    left_out = sum(len(v) for v in report.skipped_members.values())
    bad = sum(len(v) for v in report.errors.values())
    warned = sum(len(v) for v in report.warnings.values())
    print(
        f"packed {len(report.packed)} shards ({report.images} images, {report.masks} masks), "
        f"{len(report.skipped_existing)} already in the store, {len(report.failed)} failed, "
        f"{left_out} members left out, {bad} bad samples skipped, {warned} warnings, "
        f"{len(report.damaged)} damaged tars packed up to the break, {len(report.changed)} "
        "changed since packed"
    )
    for error in [*report.failed.values(), *report.changed.values()]:
        print(f"FAILED {error}", file=sys.stderr)
    if report.failed or report.damaged or report.duplicates:
        print(f"'sa1b-pack errors {args.dst}' lists them", file=sys.stderr)
    return 0 if report.ok else 1


def _cmd_fetch(args: argparse.Namespace) -> int:
    from .fetch.disk import DiskSpaceError
    from .fetch.download import Http
    from .fetch.links import read_links
    from .fetch.run import fetch

    shards = parse_shards(args.shards) if args.shards else sorted(read_links(args.links))
    try:
        report = fetch(
            args.links,
            args.src,
            shards,
            store=args.pack,
            delete_tars=args.delete_tars,
            jobs=args.jobs,
            pack_jobs=args.pack_jobs,
            http=Http(retries=args.retries, timeout=args.timeout),
            force=args.force,
            image_longest=args.image_longest,
            on_error=args.on_error,
            progress=not args.quiet,
        )
    except DiskSpaceError as exc:
        print(f"sa1b-pack: error: {exc}", file=sys.stderr)
        return 2
    print(
        f"downloaded {len(report.downloaded)}, packed {len(report.packed)}, deleted "
        f"{len(report.deleted)} tars; {len(report.failed)} failed to download, "
        f"{len(report.pack_failed)} failed to pack"
    )
    for name, reason in {**report.failed, **report.pack_failed}.items():
        print(f"FAILED {name}: {reason}", file=sys.stderr)
    return 0 if report.ok else 1


def _cmd_synth(args: argparse.Namespace) -> int:
    try:
        from .testing.synth import synth_shards
    except ImportError as exc:
        raise ValueError(f"synth needs `pip install sa1b-pack[synth]` ({exc})") from None

    paths = synth_shards(
        args.out,
        parse_shards(args.shards),
        args.images_per_shard,
        small=args.small,
        seed=args.seed,
        layout=args.layout,
        gzip=args.gzip,
        jobs=args.jobs,
        progress=not args.quiet,
    )
    print(f"wrote {len(paths)} shards to {args.out}")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from .storage import storage_for
    from .store.manifest import attached_summary, read_manifest, summary

    storage = storage_for(args.dst)  # the manifest alone: no part is opened
    manifest = read_manifest(storage)
    info = summary(manifest, storage.url)
    width = max(len(k) for k in info)
    for key, value in info.items():
        shown = f"{value:,}" if isinstance(value, int) else value
        print(f"{key:<{width}}  {shown}")
    for name, a in attached_summary(manifest).items():
        shape = "x".join(map(str, a["shape"])) or "scalar"
        line = (f"attached {name}: {a['dtype']} {shape}, {a['bytes_per_image']:,} bytes per image, "
                f"{a['bytes']:,} bytes in {a['shards']} of {a['of_shards']} shards")  # fmt: skip
        print(line + (f", {a['missing']:,} images without one (zeros)" if a["missing"] else ""))
    return 0


def _cmd_attach(args: argparse.Namespace) -> int:
    from .write.attach import attach_dir

    report = attach_dir(args.dst, args.name, args.source, allow_missing=args.allow_missing,
                        jobs=args.jobs, progress=not args.quiet)  # fmt: skip
    print(f"attached {args.name} ({report.dtype} {report.shape}) to {len(report.attached)} "
          f"shards, {len(report.already)} had it already; {len(report.missing)} images "
          "without an array (zeros, recorded)")  # fmt: skip
    return 0


def _cmd_detach(args: argparse.Namespace) -> int:
    from .write.attach import detach

    print(f"detached {args.name} from {len(detach(args.dst, args.name))} shards")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    from .read.reader import open_store
    from .render import save_sample_png

    store = open_store(args.dst)
    try:
        sample = store[args.index]
    except IndexError as exc:
        raise ValueError(str(exc)) from None
    print(save_sample_png(sample, args.out, max_masks=args.max_masks, scale=args.scale))
    return 0


def _cmd_errors(args: argparse.Namespace) -> int:
    from .store.manifest import left_out, read_manifest

    rows = left_out(read_manifest(args.dst))
    for row in rows:
        print(f"{row['shard']}\t{row['kind']}\t{row['member']}\t{row['reason']}")
    warned = sum(row["kind"] == "warning" for row in rows)
    print(f"{len(rows) - warned} problems recorded, {warned} warnings", file=sys.stderr)
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from .read.verify import verify

    problems = verify(
        args.dst, source=args.source, sample=args.sample, jobs=args.jobs, progress=not args.quiet
    )
    for problem in problems:
        print(problem)
    print(f"verify: {len(problems)} problems" if problems else "verify: OK", file=sys.stderr)
    return 1 if problems else 0


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sa1b-pack",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = _command(sub, "pack", "pack tar shards into a store (resumable)")
    p.add_argument("src", help="folder holding sa_NNNNNN.tar shards")
    p.add_argument("dst", help="store folder (created if missing)")
    p.add_argument("--shards", help="e.g. 0-99 or 3,7,10-12 (default: every shard in SRC)")
    p.add_argument("--jobs", type=int, default=1, help="shards packed in parallel")
    p.add_argument(
        "--image-longest",
        type=int,
        metavar="L",
        help="also store every image resized to longest side L (JPEG q90) for training",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
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
    p.set_defaults(func=_cmd_pack)

    f = _command(sub, "fetch", "download shards from Meta's links file, pack as they land")
    f.add_argument("links", help="Meta's links file: file_name<TAB>cdn_link, a header line")
    f.add_argument("src", help="folder for the tars (created if missing)")
    f.add_argument("--shards", help="e.g. 0-99 or 3,7,10-12 (default: every shard listed)")
    f.add_argument("--jobs", type=int, default=4, help="parallel downloads")
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
    f.add_argument("--quiet", action="store_true", help="no progress bars")
    f.set_defaults(func=_cmd_fetch)

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
    s.add_argument("--jobs", type=int, default=1, help="shards written in parallel")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=_cmd_synth)

    i = _command(sub, "info", "shards, images, masks, bytes, format version")
    i.add_argument("dst", help="store folder")
    i.set_defaults(func=_cmd_info)

    e = _command(
        sub,
        "errors",
        "what packing left out or found: failed shards, damaged tars, bad samples, warnings",
    )
    e.add_argument("dst", help="store folder")
    e.set_defaults(func=_cmd_errors)

    v = _command(sub, "verify", "check files, offsets, masks; with --source, the tars too")
    v.add_argument("dst", help="store folder")
    v.add_argument("--source", help="folder of the source tars: compare samples with them")
    v.add_argument("--sample", type=float, default=1.0, help="share of images compared (0-1]")
    v.add_argument("--jobs", type=int, default=1, help="shards checked in parallel")
    v.add_argument("--quiet", action="store_true", help="no progress bar")
    v.set_defaults(func=_cmd_verify)

    a = _command(sub, "attach", "attach one array per image (e.g. teacher embeddings)")
    a.add_argument("dst", help="store folder or URL")
    a.add_argument("name", help="the array's name: letters, digits, _ (a batch key in training)")
    a.add_argument("--from", dest="source", required=True, metavar="DIR",
                   help="folder of <image_id>.npy files, one dtype and shape for all")  # fmt: skip
    a.add_argument("--allow-missing", action="store_true",
                   help="images without a file get zeros, recorded in the manifest")  # fmt: skip
    a.add_argument("--jobs", type=int, default=1, help="threads reading the files")
    a.add_argument("--quiet", action="store_true", help="no progress bar")
    a.set_defaults(func=_cmd_attach)

    d = _command(sub, "detach", "remove an attached array and its files")
    d.add_argument("dst", help="store folder or URL")
    d.add_argument("name", help="the attached array's name")
    d.set_defaults(func=_cmd_detach)

    v = _command(sub, "show", "render one image with its largest masks as a PNG")
    v.add_argument("dst", help="store folder")
    v.add_argument("index", type=int, help="sample index in the store (negative from the end)")
    v.add_argument("--out", default="sample.png", help="PNG to write (default: sample.png)")
    v.add_argument("--max-masks", type=int, default=50, help="largest masks shown, by area")
    v.add_argument("--scale", type=float, help="resize factor (default: long side <= 1500 px)")
    v.set_defaults(func=_cmd_show)
    return parser


def _user_errors() -> tuple[type[Exception], ...]:
    """Errors that are the user's to fix, shown as one line. Imported only once something is
    raised, so that ``--help`` and ``fetch`` do not load the store package."""
    from .errors import StoreError

    return (ShardError, StoreError, FileNotFoundError, ValueError)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except Exception as exc:
        if not isinstance(exc, _user_errors()):
            raise
        print(f"sa1b-pack: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""What each ``sa1b-pack`` command does: thin wrappers over the Python API, each importing
what it needs when it runs (so ``--help`` and the light commands stay quick, and ``synth``
alone imports ``sa1b_pack.testing``). The options are declared in ``__init__.py``."""

from __future__ import annotations

import argparse
import sys

from ..source.shards import available_shards, parse_shards


def cmd_pack(args: argparse.Namespace) -> int:
    from ..write.packer import pack

    shards = parse_shards(args.shards) if args.shards else available_shards(args.src)
    if not shards:
        raise FileNotFoundError(f"no sa_NNNNNN.tar shards in {args.src}")
    report = pack(
        args.src,
        args.store,
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
        print(f"'sa1b-pack errors {args.store}' lists them", file=sys.stderr)
    return 0 if report.ok else 1


def cmd_fetch(args: argparse.Namespace) -> int:
    from ..fetch.disk import DiskSpaceError
    from ..fetch.download import Http
    from ..fetch.links import read_links
    from ..fetch.run import fetch

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


def cmd_synth(args: argparse.Namespace) -> int:
    try:
        from ..testing.synth import synth_shards
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


def cmd_info(args: argparse.Namespace) -> int:
    from ..storage import storage_for
    from ..store.manifest import attached_summary, read_manifest, summary

    storage = storage_for(args.store)  # the manifest alone: no part is opened
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


def cmd_attach(args: argparse.Namespace) -> int:
    from ..write.attach import attach_dir

    report = attach_dir(args.store, args.name, args.source, allow_missing=args.allow_missing,
                        jobs=args.jobs, progress=not args.quiet)  # fmt: skip
    print(f"attached {args.name} ({report.dtype} {report.shape}) to {len(report.attached)} "
          f"shards, {len(report.already)} had it already; {len(report.missing)} images "
          "without an array (zeros, recorded)")  # fmt: skip
    return 0


def cmd_detach(args: argparse.Namespace) -> int:
    from ..write.attach import detach

    print(f"detached {args.name} from {len(detach(args.store, args.name))} shards")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from ..read.reader import open_store
    from ..render import save_sample_png

    store = open_store(args.store)
    try:
        sample = store[args.index]
    except IndexError as exc:
        raise ValueError(str(exc)) from None
    print(save_sample_png(sample, args.out, max_masks=args.max_masks, scale=args.scale))
    return 0


def cmd_errors(args: argparse.Namespace) -> int:
    from ..store.manifest import left_out, read_manifest

    rows = left_out(read_manifest(args.store))
    for row in rows:
        print(f"{row['shard']}\t{row['kind']}\t{row['member']}\t{row['reason']}")
    warned = sum(row["kind"] == "warning" for row in rows)
    print(f"{len(rows) - warned} problems recorded, {warned} warnings", file=sys.stderr)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from ..read.verify import verify

    problems = verify(
        args.store, source=args.source, sample=args.sample, jobs=args.jobs, progress=not args.quiet
    )
    for problem in problems:
        print(problem)
    print(f"verify: {len(problems)} problems" if problems else "verify: OK", file=sys.stderr)
    return 1 if problems else 0

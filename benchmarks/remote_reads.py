"""What does a store on object storage cost: pack time per shard and, per sample read, how many
requests and bytes? (Not in `make bench`: run it alone.)

Packs synthetic shards into an S3-compatible server (moto) on loopback and into a local
folder, then reads samples from both. Loopback has no latency or bandwidth limit, so times show
our overhead only; requests and bytes per sample carry over to real object storage.

    python benchmarks/remote_reads.py [--smoke] [--images 6]
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

import harness as h
import numpy as np

from sa1b_pack import open_store, pack


def request_stats(store) -> tuple[int, int]:
    """(requests, bytes) this store has fetched so far (its object storage's counters)."""
    return store.storage.stats.requests, store.storage.stats.bytes


def start_s3():
    import fsspec
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                      AWS_DEFAULT_REGION="us-east-1")  # fmt: skip
    fsspec.config.conf["s3"] = {"endpoint_url": f"http://127.0.0.1:{port}"}
    fsspec.filesystem("s3").mkdir("bench")
    return server


def per_sample(store, action, indices: list[int]) -> tuple[list[float], float, float]:
    """(seconds per sample, requests per sample, kB per sample) of ``action(store[i])``."""
    r0, b0 = request_stats(store)
    times = h.per_call(lambda i: action(store[i]), indices)
    r1, b1 = request_stats(store)
    return times, (r1 - r0) / len(indices), (b1 - b0) / len(indices) / 1e3


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shards", type=int, default=2)
    p.add_argument("--images", type=int, default=6)
    p.add_argument("--smoke", action="store_true", help="small images, for tests")
    p.add_argument("--results", type=Path, default=h.RESULTS_DIR)
    args = p.parse_args(argv)
    env = h.environment()
    print(f"$ {env['command']}\n# {args.shards} shards x {args.images} images, loopback S3")
    tars = h.synth_cached(list(range(args.shards)), args.images, args.smoke, None)
    shards, n_img = list(range(args.shards)), args.shards * args.images
    mb = sum(t.stat().st_size for t in tars) / 1e6
    server = start_s3()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            pack(tars[0].parent, f"{tmp}/warm", shards[:1], progress=False)  # load kernels
            rows = []
            for where, dst in (("a local folder", f"{tmp}/local"), ("S3", "s3://bench/store")):
                t0 = time.perf_counter()
                pack(tars[0].parent, dst, shards, progress=False)
                t = time.perf_counter() - t0
                what = f"{mb / t:.0f} MB/s of tar, {n_img / t:.0f} images/s"
                rows.append(h.row(f"pack to {where}", [t / args.shards], "s/shard", what=what))
            local, far = open_store(f"{tmp}/local"), open_store("s3://bench/store")
            _, first_requests, first_kb = per_sample(far, lambda s: None, [0])
            what = f"{first_kb:.0f} kB: images table + annotations footer"
            rows.append(h.row("S3: first touch of a part", [first_requests], "requests", what=what))
            order = [int(i) for i in np.random.default_rng(0).permutation(len(far))]
            actions = {
                "metadata (ids, bbox, iou)": lambda s: (s.mask_ids, s.bbox, s.predicted_iou),
                "+ masks(64 @ 256, padded)": lambda s: s.masks(
                    np.arange(min(64, len(s))), longest=256, pad=True),
                "+ jpeg bytes": lambda s: bytes(s.jpeg),
            }  # fmt: skip
            for name, action in actions.items():
                times, requests, kb = per_sample(far, action, order)
                near, _, _ = per_sample(local, action, order)
                what = f"{requests:.1f} requests, {kb:.0f} kB per sample"
                rows.append(
                    h.latency(f"S3: {name}", times, f"{h.x(h.ratio(times, near))} local", what)
                )
    finally:
        server.stop()
    print(h.text_table(rows))
    print(
        "\nper sample after the part's first touch; each action re-reads store[i], so its "
        "requests include the metadata row's (1 annotation row group, cached per process)."
    )
    name = f"remote_reads-{'smoke-' * args.smoke}{h.run_name()}.json"
    print(f"results: {h.write_json(args.results / name, {'environment': env, 'rows': rows})}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What does a store on object storage cost: per-shard pack time and, per sample read, how many
requests and bytes?

Starts an S3-compatible server (moto) on loopback, packs full-size synthetic shards into it
and into a local folder, then reads samples back from both. Loopback has no network latency
or bandwidth limit, so the times show our overhead only; requests and bytes per sample are
what carries over to real object storage (multiply requests by its latency, bytes by 1/bandwidth).

    python benchmarks/remote_reads.py [--smoke]
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import (
    environment,
    measure,
    p50,
    print_header,
    print_table,
    synth_cached,
    write_results,
)

HEADERS = ("measure", "p50", "unit", "requests", "kB fetched", "n", "notes")


def start_s3() -> tuple[Any, str]:
    import fsspec
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1"
    )
    fsspec.config.conf["s3"] = {"endpoint_url": url}
    fsspec.filesystem("s3").mkdir("bench")
    return server, url


def per_sample(store: Any, action: Any, indices: list[int]) -> tuple[list[float], float, float]:
    """(seconds per sample, requests per sample, kB per sample) of ``action(store[i])``."""
    from sa1b_pack.store import remote

    times = []
    before = (remote.STATS.requests, remote.STATS.bytes)
    for i in indices:
        start = time.perf_counter()
        action(store[i])
        times.append(time.perf_counter() - start)
    requests = (remote.STATS.requests - before[0]) / len(indices)
    kb = (remote.STATS.bytes - before[1]) / len(indices) / 1e3
    return times, requests, kb


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shards", type=int, default=2)
    p.add_argument("--images", type=int, default=6)
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--results", type=Path, default=None)
    args = p.parse_args(argv)
    from sa1b_pack import open_store, pack

    env = environment()
    print_header(f"remote_reads: {args.shards} shards x {args.images} images on loopback S3", env)
    tars = synth_cached(args.shards, args.images, small=args.smoke)
    indices = list(range(args.shards))
    server, url = start_s3()
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            pack(tars[0].parent, f"{tmp}/warm", indices[:1], progress=False)  # load kernels
            t_local = measure(lambda: pack(tars[0].parent, f"{tmp}/local", indices,
                                           progress=False), 1, warmup=0)  # fmt: skip
            t_s3 = measure(lambda: pack(tars[0].parent, "s3://bench/store", indices,
                                        progress=False), 1, warmup=0)  # fmt: skip
            mb = sum(t.stat().st_size for t in tars) / 1e6
            n_img = args.shards * args.images
            rows += [
                ["pack to a local folder", t_local[0] / args.shards, "s/shard", "", "", 1,
                 f"{mb / t_local[0]:.0f} MB/s of tar, {n_img / t_local[0]:.0f} images/s"],
                ["pack to S3 (loopback)", t_s3[0] / args.shards, "s/shard", "", "", 1,
                 f"{mb / t_s3[0]:.0f} MB/s of tar: + upload of each part, 1 manifest PUT/shard"],
            ]  # fmt: skip
            local, far = open_store(f"{tmp}/local"), open_store("s3://bench/store")
            order = list(np.random.default_rng(0).permutation(len(far)))
            _, open_requests, open_kb = per_sample(far, lambda s: None, [0])
            actions = {
                "metadata (ids, bbox, iou)": lambda s: (s.ids, s.bbox, s.predicted_iou),
                "+ masks(64 @ 256, padded)": lambda s: s.masks(
                    np.arange(min(64, len(s))), longest=256, pad=True
                ),
                "+ jpeg bytes": lambda s: bytes(s.jpeg),
            }
            for name, action in actions.items():
                times, requests, kb = per_sample(far, action, order)
                local_times, _, _ = per_sample(local, action, order)
                rows.append([f"S3: {name}", 1e3 * p50(times), "ms", f"{requests:.1f}",
                             f"{kb:.0f}", len(order),
                             f"local: {1e3 * p50(local_times):.2f} ms"])  # fmt: skip
            rows.append(["S3: first touch of a part", "", "", f"{open_requests:.0f}",
                         f"{open_kb:.0f}", 1, "images table + annotations footer, once per "
                         "part per process"])  # fmt: skip
    finally:
        server.stop()
    print()
    table = print_table(HEADERS, rows)
    print(
        "\nrequests/kB are per sample after the part's first touch; each action re-reads "
        "store[i], so its row includes the metadata row's fetches (1 annotation row group, "
        "cached per process)."
    )
    result = {"environment": env, "rows": [dict(zip(HEADERS, r, strict=True)) for r in rows],
              "table": table, "endpoint": url}  # fmt: skip
    path = write_results("remote_reads-smoke" if args.smoke else "remote_reads", result,
                         args.results)  # fmt: skip
    print(f"results: {path}")
    return result


if __name__ == "__main__":
    main()

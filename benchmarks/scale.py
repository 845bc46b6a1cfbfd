"""Object storage: the training recipe over the run's store on a loopback S3 with a latency
added to every request, uncached and through the local part cache (cold, then warm), against
the same reads from the local disk; and the requests and bytes a sample costs uncached."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from harness import Ctx, Result, pack_store, question, row, x
from harness import recipe as recipe_of

from sa1b_pack import open_store

LATENCY = 0.020  # seconds added to every request to the object store


def s3_server(bucket: str, delay: list[float] | None = None) -> Any:
    """A moto S3 server on loopback holding ``bucket``, sleeping ``delay[0]`` s before every
    response (a list: change it while the server runs); fsspec's s3 points at it."""
    import fsspec
    from moto.server import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    app, delay = DomainDispatcherApplication(create_backend_app), delay or [0.0]

    def slow(environ, start_response):
        time.sleep(delay[0])
        return app(environ, start_response)

    server = make_server("127.0.0.1", 0, slow, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    fsspec.config.conf["s3"] = {"endpoint_url": f"http://127.0.0.1:{server.server_port}"}
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                      AWS_DEFAULT_REGION="us-east-1")  # fmt: skip
    fsspec.filesystem("s3").mkdir(bucket)
    return server


def node_epoch(ctx: Ctx, url: str, order: str, node: int) -> tuple[float, int]:
    """One node of 2 (1 rank each, its own part cache, cold) through one epoch of the training
    recipe in ``order``: samples/s and the bytes its cache downloaded."""
    from sa1b_pack.torch import SA1BDataset, SA1BSampler

    far = open_store(url, cache_dir=ctx.work / f"node-{order}-{node}", cache_bytes=10**12)
    ds = SA1BDataset(far, **recipe_of(ctx, filtered=False))
    sampler, t0 = SA1BSampler(ds, 2, node, order=order, ranks_per_node=1), time.perf_counter()
    n = sum(1 for key in sampler if ds[key] is not None)
    return n / (time.perf_counter() - t0), far.storage.cache.stats.downloaded_bytes


@question("scale", "What does object storage cost the training recipe, with and without the "
          "local part cache?")  # fmt: skip
def scale(ctx: Ctx) -> Result:
    from sa1b_pack.train.recipe import Recipe, training_sample

    delay, recipe, local = [0.0], Recipe(**recipe_of(ctx, filtered=False)), open_store(ctx.store)
    order = local.epoch_order(seed=0, epoch=0, order="blocks", window=1)
    items = [int(i) for i in order if len(local[int(i)])][: ctx.size(24, 4)]

    def rate(store) -> float:
        t0 = time.perf_counter()
        for i in items:
            training_sample(store, i, recipe)
        return len(items) / (time.perf_counter() - t0)

    server = s3_server("scale", delay)
    try:
        url, t0 = "s3://scale/store", time.perf_counter()
        pack_store(ctx.tars, url)  # type: ignore[arg-type]
        pack_mb_s = sum(p.stat().st_size for p in ctx.tars) / 1e6 / (time.perf_counter() - t0)
        rate(local)  # kernels compiled, pages warm
        delay[0] = LATENCY
        # every case on a fresh reader (opened untimed): each pays its first touch of a part
        far, cache = open_store(url), ctx.work / "scale-cache"
        rates = {"local": rate(open_store(ctx.store)), "S3, no cache": rate(far)}
        for case in ("S3, cache cold", "S3, cache warm"):
            rates[case] = rate(open_store(url, cache_dir=cache, cache_bytes=10**12))
        nodes = {order: [node_epoch(ctx, url, order, node) for node in range(2)]
                 for order in ("blocks", "nodes")}  # fmt: skip
    finally:
        delay[0] = 0.0
        server.shutdown()
    rows = [row(f"training recipe, {name}", [v], "samples/s",
                "ref" if name == "local" else f"{x(v / rates['local'])} local",
                f"{LATENCY * 1e3:.0f} ms per request" if "S3" in name else "same samples")
            for name, v in rates.items()]  # fmt: skip
    rows += [row("S3, no cache: requests per sample", [far.storage.stats.requests / len(items)],
                 "requests", what=f"{far.storage.stats.bytes / len(items) / 1e3:.0f} kB per "
                 "sample; first touches of parts included"),
             row("pack the run's shards to S3 (no delay)", [pack_mb_s], "MB/s",
                 what="MB/s of tar; loopback: our overhead only")]  # fmt: skip
    size, got = sum(f.stat().st_size for f in ctx.store.rglob("*") if f.is_file()), {
        o: sum(b for _, b in n) for o, n in nodes.items()}  # fmt: skip
    rows += [row(f"2 nodes, a cache each, {o} order: cluster download", [got[o] / size],
                 "x store", "ref" if o == "blocks" else f"{x(got['blocks'] / got[o])} less",
                 "per node: " + ", ".join(f"{r:.1f} samples/s" for r, _ in n))
             for o, n in nodes.items()]  # fmt: skip
    notes = [
        "S3: moto on loopback behind a WSGI wrapper sleeping before every response, store "
        "= the run's full-size shards, samples in blocks order (window 1), one process; "
        "every case on a fresh reader, so each pays its first touch of a part. 2 nodes: "
        "one process plays each in turn, SA1BSampler(2, node, ranks_per_node=1)."
    ]
    return Result(rows, notes)

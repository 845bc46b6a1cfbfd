"""Many nodes on object storage, simulated from metadata (no data read): N nodes x 8 ranks over
1,000 parts of SA-1B size, a part cache per node; per epoch, what each node and the cluster
download, the next epoch's cache hit rate and the padding, blocks order (rank r of W takes r,
r + W, ...) against the node-aware order. Resume costs: docs/decisions/node-aware-order.md."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
from harness import Ctx, Result, question, row, x

from sa1b_pack.store.order import epoch_order
from sa1b_pack.train.nodes import NodeOrder

PARTS, RANKS, WINDOW, EPOCHS = 1000, 8, 8, 2
IMAGES, PART_BYTES = 11_100, 10.5e9  # per part, on average (SA-1B: 11.1 M images, 10.5 TB)
CACHE_BYTES = 200e9  # per node: docs/nodes.md's example cache
NODES = (1, 2, 4, 16, 64)


def blocks_reads(orders: list, nodes: int) -> list[list[np.ndarray]]:
    """Per epoch, per node: the parts it reads in order of first use (blocks order)."""
    out = []
    for part, first in orders:
        node = np.arange(len(part)) % (nodes * RANKS) // RANKS
        touched = np.bincount(node * PARTS + part, minlength=nodes * PARTS).reshape(nodes, -1)
        sequence = np.argsort(first, kind="stable")
        out.append([sequence[touched[n, sequence] > 0] for n in range(nodes)])
    return out


def nodes_reads(images: np.ndarray, nodes: int) -> tuple[list[list[np.ndarray]], float]:
    """The same for the node-aware order, and its padding (extra steps over samples)."""
    plans = [NodeOrder(images, seed=0, epoch=epoch, partitions=PARTS, window=WINDOW,
                       nodes=nodes, ranks_per_node=RANKS) for epoch in range(EPOCHS)]  # fmt: skip
    reads = [[np.concatenate([p.members[k] for k in np.flatnonzero(p.dealt == n)])
              for n in range(nodes)] for p in plans]  # fmt: skip
    return reads, max(p.steps() * RANKS * nodes / images.sum() - 1 for p in plans)


def misses(reads: list[list[np.ndarray]], sizes: np.ndarray, node: int) -> list[int]:
    """Parts a node downloads in each epoch through an LRU cache of CACHE_BYTES."""
    cache: OrderedDict[int, float] = OrderedDict()
    out = []
    for epoch in reads:
        out.append(0)
        for p in epoch[node].tolist():
            out[-1] += p not in cache
            cache[p] = sizes[p]
            cache.move_to_end(p)
            while sum(cache.values()) > CACHE_BYTES:
                cache.popitem(last=False)
    return out


def simulate() -> list[dict]:
    images = np.random.default_rng(0).normal(IMAGES, IMAGES / 100, PARTS).round().astype(int)
    sizes = images * (PART_BYTES / IMAGES)  # counts within ~1 % of the mean, bytes in step
    orders = []
    for epoch in range(EPOCHS):
        order = epoch_order(images, seed=0, epoch=epoch, order="blocks", window=WINDOW)
        part = np.searchsorted(np.cumsum(images), order, side="right")
        first = np.full(PARTS, len(order))
        np.minimum.at(first, part, np.arange(len(order)))
        orders.append((part, first))
    table = []
    for nodes in NODES:
        for name in ("blocks", "nodes"):
            reads, padding = (blocks_reads(orders, nodes), 0.0) if name == "blocks" else \
                nodes_reads(images, nodes)  # fmt: skip
            per_node = np.array([sizes[p].sum() for p in reads[0]])
            warm = sum(misses(reads, sizes, n)[1] for n in range(nodes))
            counts = [len(p) for p in reads[0]]
            table.append({"order": name, "nodes": nodes, "parts per node":
                          f"{min(counts)}-{max(counts)}", "GB per node": per_node.mean() / 1e9,
                          "cluster / store": per_node.sum() / sizes.sum(), "hit rate, epoch 2":
                          1 - warm / sum(map(len, reads[1])), "padding": padding})  # fmt: skip
    return table


@question("cluster", "On many nodes reading object storage through a part cache per node, "
          "what does each node and the cluster download per epoch, blocks order against "
          "the node-aware order?")  # fmt: skip
def cluster(ctx: Ctx) -> Result:
    table = simulate()
    blocks = {t["nodes"]: t["cluster / store"] for t in table if t["order"] == "blocks"}
    rows = [row(f"cluster download per epoch, {t['nodes']} x {RANKS} ranks, {t['order']}",
                [t["cluster / store"]], "x store", "ref" if t["order"] == "blocks" else
                f"{x(blocks[t['nodes']] / t['cluster / store'])} less", f"{t['GB per node']:,.0f}"
                f" GB per node, epoch 2 hit rate {t['hit rate, epoch 2']:.1%}, padding "
                f"{t['padding']:.2%}") for t in table]  # fmt: skip
    rows.append(
        row(
            f"padding of the node-aware order, most at {NODES[0]}-{NODES[-1]} nodes",
            [100 * max(t["padding"] for t in table)],
            "%",
            what="extra steps / samples",
        )
    )
    notes = [f"Simulated from metadata, no data read: {PARTS} parts of ~{IMAGES:,} images and "
             f"~{PART_BYTES / 1e9} GB (counts within ~1 %), window {WINDOW}, {RANKS} ranks per "
             f"node, an LRU part cache of {CACHE_BYTES / 1e9:.0f} GB per node. A job's start "
             "time: the startup question."]  # fmt: skip
    return Result(rows, notes)

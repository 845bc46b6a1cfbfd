"""Many nodes on object storage, simulated from metadata (no data is read): N nodes x 8 ranks
over 1,000 parts of real SA-1B size, a part cache per node. What each node and the cluster
download per epoch, the cache's hit rate in the next epoch and the padding, today's blocks
order (rank r of W takes r, r + W, ...) against the node-aware order; and what resuming an
epoch halfway on another layout downloads again.   python benchmarks/cluster.py  (~10 s)
"""

from __future__ import annotations

import sys
from collections import OrderedDict

import numpy as np
from harness import Ctx, Result, question, row, text_table, x

from sa1b_pack.store.order import epoch_order
from sa1b_pack.train.nodes import NodeOrder

PARTS, RANKS, WINDOW, EPOCHS = 1000, 8, 8, 2
IMAGES, PART_BYTES = 11_100, 10.5e9  # per part, on average (SA-1B: 11.1 M images, 10.5 TB)
CACHE_BYTES = 200e9  # per node: the README's example cache
NODES = (1, 2, 4, 16, 64)
CHANGES = ((16, 8, 8, 8), (16, 8, 32, 8), (2, 8, 3, 8), (2, 8, 2, 4))  # N x R -> N' x R'


def plan(images: np.ndarray, epoch: int, nodes: int, ranks: int = RANKS) -> NodeOrder:
    return NodeOrder(images, seed=0, epoch=epoch, partitions=PARTS, window=WINDOW, nodes=nodes,
                     ranks_per_node=ranks)  # fmt: skip


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
    plans = [plan(images, epoch, nodes) for epoch in range(EPOCHS)]
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


def resume_cost(images: np.ndarray, sizes: np.ndarray, change: tuple) -> dict:
    """Stopped halfway on N x R, resumed on N' x R': the parts started and unfinished that
    land on another node are downloaded again (a remaining node keeps its own)."""
    before = plan(images, 0, change[0], change[1])
    steps = before.steps() // 2
    done = before.consumed(steps)
    started = (done > 0) & (done < before.totals)
    moved = started & (before.resume(steps, change[2], change[3]).dealt != before.dealt)
    again = sum(sizes[before.members[k]].sum() for k in np.flatnonzero(moved))
    return {"resume": "{} x {} -> {} x {}".format(*change), "started parts": int(started.sum()),
            "GB again": again / 1e9, "of the store": again / sizes.sum()}  # fmt: skip


def simulate() -> tuple[list[dict], list[dict]]:
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
                          1 - warm / sum(map(len, reads[1])), "padding": padding,
                          "start (persisted index)": "-"})  # fmt: skip
    return table, [resume_cost(images, sizes, change) for change in CHANGES]


@question("cluster", "On many nodes reading object storage through a part cache per node, "
          "what does each node and the cluster download per epoch, blocks order against "
          "the node-aware order?")  # fmt: skip
def cluster(ctx: Ctx) -> Result:
    table, changes = simulate()
    blocks = {t["nodes"]: t["cluster / store"] for t in table if t["order"] == "blocks"}
    rows = [row(f"cluster download per epoch, {t['nodes']} x {RANKS} ranks, {t['order']}",
                [t["cluster / store"]], "x store", "ref" if t["order"] == "blocks" else
                f"{x(blocks[t['nodes']] / t['cluster / store'])} less", f"{t['GB per node']:,.0f}"
                f" GB per node, epoch 2 hit rate {t['hit rate, epoch 2']:.1%}, padding "
                f"{t['padding']:.2%}") for t in table]  # fmt: skip
    rows += [row(f"resume {c['resume']} halfway: downloaded again", [c["GB again"]], "GB", "",
                 f"{c['of the store']:.2%} of the store; {c['started parts']} parts started")
             for c in changes]  # fmt: skip
    ours = [t for t in table if t["order"] == "nodes"]
    reading = [
        f"Node-aware order: the cluster downloads at most "
        f"{max(t['cluster / store'] for t in ours):.2f}x the store per epoch at {NODES[0]}-"
        f"{NODES[-1]} nodes, the blocks order up to {max(blocks.values()):.1f}x; padding at "
        f"most {max(t['padding'] for t in ours):.2%} of the steps. Resuming halfway on another "
        f"layout downloads again at most {max(c['of the store'] for c in changes):.1%} of the "
        "store."
    ]  # fmt: skip
    notes = [f"{PARTS} parts of ~{IMAGES:,} images and ~{PART_BYTES / 1e9} GB (counts within "
             f"~1 %), window {WINDOW}, {RANKS} ranks per node, an LRU part cache of "
             f"{CACHE_BYTES / 1e9:.0f} GB per node; start time: the persisted index's figure, "
             "not measured here."]  # fmt: skip
    return Result(rows, reading, notes, {"cluster": {"table": table, "changes": changes}})


def shown(rows: list[dict]) -> list[dict]:
    pct = ("hit rate, epoch 2", "padding", "of the store")
    return [{k: f"{v:.2%}" if k in pct else f"{v:.2f}x" if k == "cluster / store" else v
             for k, v in r.items()} for r in rows]  # fmt: skip


def main() -> int:
    table, changes = simulate()
    print(
        f"{PARTS} parts x ~{IMAGES:,} images, ~{PART_BYTES / 1e9} GB each; {RANKS} ranks per "
        f"node; window {WINDOW}; LRU cache {CACHE_BYTES / 1e9:.0f} GB per node\n"
    )
    print(text_table(shown(table), list(table[0])), "\n\n" + text_table(shown(changes),
          list(changes[0])))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The node-aware order (order="nodes"): each part read by one node per epoch, every sample
once (padding aside), exact resume at the same layout and elastic resume to other numbers of
nodes and ranks per node through the state, with every rank of the cluster simulated in one
process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sa1b_pack import open_store
from sa1b_pack.train.nodes import NodeOrder, deal
from sa1b_pack.train.sampler import EpochSampler


class Parts:
    """A dataset over parts of these sizes (what the sampler needs of a Store)."""

    def __init__(self, sizes) -> None:
        self.part_sizes = np.asarray(sizes)

    def __len__(self) -> int:
        return int(self.part_sizes.sum())


SIZES = np.random.default_rng(0).integers(20, 60, size=40)
SIZES[[3, 17]] = 0  # parts with no eligible image
DATA = Parts(SIZES)
PART = np.repeat(np.arange(len(SIZES)), SIZES)  # the part of each dataset index


def cluster(nodes: int, ranks: int, **kw) -> list[EpochSampler]:
    kw = {"order": "nodes", "ranks_per_node": ranks, "seed": 3, "window": 2, **kw}
    return [EpochSampler(DATA, nodes * ranks, r, **kw) for r in range(nodes * ranks)]


def take(samplers: list[EpochSampler], steps: int | None = None) -> list[list[int]]:
    """What each rank yields, ranks stepping together (all of the epoch if steps is None)."""
    iters = [iter(s) for s in samplers]
    out: list[list[int]] = [[] for _ in samplers]
    while steps is None or len(out[0]) < steps:
        got = [next(it, None) for it in iters]
        if got[0] is None:
            assert all(g is None for g in got), "ranks yield the same number of samples"
            break
        for mine, (index, epoch) in zip(out, got, strict=True):
            assert epoch == samplers[0].epoch
            mine.append(index)
    return out


def flat(lists: list[list[int]]) -> list[int]:
    return [i for mine in lists for i in mine]


def nodes_of_parts(per_rank: list[list[int]], ranks: int) -> dict[int, set[int]]:
    readers: dict[int, set[int]] = {}
    for rank, indices in enumerate(per_rank):
        for p in set(PART[indices].tolist()):
            readers.setdefault(p, set()).add(rank // ranks)
    return readers


def assert_covers_once(got: list[int], padding: int) -> None:
    """Every index of the epoch, and no repeat but ``padding`` ones."""
    assert sorted(set(got)) == list(range(len(DATA)))
    assert len(got) - len(DATA) == padding


@pytest.mark.parametrize("nodes", [1, 2, 4, 16])
def test_each_part_is_read_by_exactly_one_node_per_epoch(nodes: int) -> None:
    for epoch in (0, 1):
        samplers = cluster(nodes, 8)
        for s in samplers:
            s.set_epoch(epoch)
        per_rank = take(samplers)
        readers = nodes_of_parts(per_rank, 8)
        assert sorted(readers) == [p for p in range(len(SIZES)) if SIZES[p]]
        assert all(len(r) == 1 for r in readers.values())
        assert len({len(r) for r in per_rank}) == 1 and len(samplers[0]) == len(per_rank[0])
        plan = samplers[0].node_order()
        lengths = np.bincount([next(iter(readers[p])) for p in readers],
                              [SIZES[p] for p in readers], nodes)  # fmt: skip
        np.testing.assert_array_equal(plan.lengths, lengths)
        assert_covers_once(flat(per_rank), plan.steps() * 8 * nodes - len(DATA))
        # nodes hold whole parts: balanced to within about a part's samples
        assert plan.lengths.max() - plan.lengths.min() <= SIZES.max()
        assert samplers[0].consumed == len(DATA)


def test_an_epoch_is_a_function_of_seed_epoch_and_layout() -> None:
    first = take(cluster(2, 4))
    assert take(cluster(2, 4)) == first
    assert take(cluster(2, 4, seed=4)) != first
    other = cluster(2, 4)
    for s in other:
        s.set_epoch(1)
    assert take(other) != first
    # each node mixes its parts: not one part after another
    assert len(set(PART[first[0][:10]].tolist())) > 1


def test_parts_are_dealt_to_nodes_anew_each_epoch() -> None:
    nodes_of = []
    for epoch in (0, 1):
        s = EpochSampler(DATA, 4, 0, order="nodes", ranks_per_node=1, seed=3)
        s.set_epoch(epoch)
        plan = s.node_order()
        nodes_of.append({int(p): int(plan.dealt[k]) for k, m in enumerate(plan.members)
                         for p in m if SIZES[p]})  # fmt: skip
    moved = sum(nodes_of[0][p] != nodes_of[1][p] for p in nodes_of[0])
    assert moved > len(nodes_of[0]) // 2  # about 3 in 4 parts change node with 4 nodes


def test_drop_last_cuts_every_node_to_the_shortest() -> None:
    per_rank = take(cluster(4, 2, drop_last=True))
    got = flat(per_rank)
    assert len(set(got)) == len(got)  # no padding, no repeat
    plan = cluster(4, 2)[0].node_order()
    assert len(per_rank[0]) == plan.lengths.min() // 2


@pytest.mark.parametrize("k", [0, 1, 5])
def test_exact_resume_at_the_same_layout(k: int) -> None:
    whole = take(cluster(2, 8))
    first = cluster(2, 8)
    seen = take(first, k)
    state = first[0].state_dict()
    assert state["steps"] == k and state["base"] is None  # a whole epoch from its start
    resumed = cluster(2, 8)
    for s in resumed:
        s.load_state_dict(state)
    assert len(resumed[0]) == len(whole[0]) - k
    rest = take(resumed)
    assert [a + b for a, b in zip(seen, rest, strict=True)] == whole


@pytest.mark.parametrize("after", [(3, 8), (2, 4), (1, 8), (5, 3)])
def test_elastic_resume_covers_the_epoch_exactly(after: tuple[int, int]) -> None:
    first, steps = cluster(2, 8), 6
    for s in first:
        s.set_epoch(2)
    done = take(first, steps)
    state = first[0].state_dict()
    assert state["consumed"] == len(set(flat(done))) == 2 * 8 * steps
    resumed = cluster(*after)
    for s in resumed:
        s.load_state_dict(state)
    plan = resumed[0].node_order()
    rest = take(resumed)
    assert all(len(r) == plan.steps() for r in rest)
    padding = plan.steps() * after[0] * after[1] - (len(DATA) - state["consumed"])
    assert_covers_once(flat(done + rest), padding)
    # the rest of each part is read by one node; parts started stay on their node
    readers = nodes_of_parts(rest, after[1])
    assert all(len(r) == 1 for r in readers.values())
    started = nodes_of_parts(done, 8)
    for p, (node,) in started.items():
        if p in readers and node < after[0]:
            assert readers[p] == {node}
    ended = cluster(*after)
    for s in ended:
        s.load_state_dict(resumed[0].state_dict())
    assert take(ended) == [[] for _ in ended]  # the resumed epoch was read to its end
    # a resumed stream resumes exactly too
    midway = cluster(*after)
    for s in midway:
        s.load_state_dict(state)
    head = take(midway, 2)
    later = cluster(*after)
    for s in later:
        s.load_state_dict(midway[0].state_dict())
    assert [a + b for a, b in zip(head, take(later), strict=True)] == rest


def test_fewer_partitions_than_parts() -> None:
    samplers = cluster(4, 2, partitions=8)
    per_rank = take(samplers)
    readers = nodes_of_parts(per_rank, 2)
    assert all(len(r) == 1 for r in readers.values())
    plan = samplers[0].node_order()
    assert plan.partitions == 8 and samplers[0].state_dict()["partitions"] == 8
    assert_covers_once(flat(per_rank), plan.steps() * 8 - len(DATA))
    with pytest.raises(ValueError, match="partitions=8"):
        cluster(4, 2)[0].load_state_dict(samplers[0].state_dict())


def test_more_nodes_than_parts_left_still_covers_the_epoch() -> None:
    first = cluster(1, 2)
    done = take(first, (len(DATA) - 30) // 2)  # what is left spans a part or two
    resumed = cluster(6, 1)
    for s in resumed:
        s.load_state_dict(first[0].state_dict())
    rest = take(resumed)
    assert sorted(set(flat(done + rest))) == list(range(len(DATA)))


def test_plain_epoch_and_consumed_state() -> None:
    """A loop without the sampler's state counted batches * batch_size * world_size."""
    plain = {"epoch": 1, "consumed": 8 * 6}
    for order in ("uniform", "blocks"):
        s = EpochSampler(DATA, 8, 3, order=order, seed=3)
        s.load_state_dict(plain)
        whole = EpochSampler(DATA, 1, 0, order=order, seed=3)
        whole.set_epoch(1)
        order_ = whole.global_order()
        wrapped = np.resize(order_, len(order_) + 8)  # padded at the end like DistributedSampler
        count = -(-(len(DATA) - plain["consumed"]) // 8)
        assert [i for i, _ in s] == wrapped[plain["consumed"] + 3 :: 8][:count].tolist()
    by_node = cluster(2, 4)
    for s in by_node:
        s.set_epoch(1)
    seen = take(by_node, 6)
    resumed = cluster(2, 4)
    for s in resumed:
        s.load_state_dict(plain)
    assert resumed[0].epoch == 1 and resumed[0].consumed == 8 * 6
    full = cluster(2, 4)
    for s in full:
        s.set_epoch(1)
    assert [a + b for a, b in zip(seen, take(resumed), strict=True)] == take(full)
    with pytest.raises(ValueError, match="whole number of steps"):
        cluster(2, 4)[0].load_state_dict({"epoch": 1, "consumed": 7})
    with pytest.raises(ValueError, match="seed=4"):
        cluster(2, 4)[0].load_state_dict({"epoch": 1, "consumed": 8, "seed": 4})


def test_ranks_per_node_default_and_bad_arguments(monkeypatch) -> None:
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert EpochSampler(DATA, 8, 0, order="nodes").ranks_per_node == 4
    with pytest.raises(ValueError, match="multiple of ranks_per_node"):
        EpochSampler(DATA, 6, 0, order="nodes")
    assert EpochSampler(DATA, 6, 0, order="blocks").ranks_per_node == 4  # unused there
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    assert EpochSampler(DATA, 6, 0, order="nodes").ranks_per_node == 1
    with pytest.raises(ValueError, match="no global order"):
        EpochSampler(DATA, 2, 0, order="nodes").global_order()
    with pytest.raises(ValueError, match="order must be one of"):
        EpochSampler(DATA, 2, 0, order="node")
    with pytest.raises(ValueError, match="base"):
        NodeOrder(SIZES, seed=0, epoch=0, partitions=4, window=1, nodes=2, ranks_per_node=1,
                  base=[0, 0, 0, 10**6])  # fmt: skip


def test_deal_balances_and_keeps_pinned_partitions() -> None:
    sizes = np.array([9, 1, 8, 0, 7, 3, 3])
    assert deal(sizes, 2).tolist() == [0, 1, 1, -1, 0, 1, 1]  # each to the least loaded
    pinned = np.array([-1, 0, -1, -1, -1, 1, -1])
    dealt = deal(sizes, 3, pinned)
    assert dealt[1] == 0 and dealt[5] == 1 and dealt[3] == -1
    loads = np.bincount(dealt[dealt >= 0], sizes[dealt >= 0], 3)
    assert loads.max() - loads.min() <= sizes.max()


@pytest.mark.parametrize("order", ["uniform", "blocks", "nodes"])
def test_a_store_is_its_own_dataset(packed_dir: Path, order: str) -> None:
    """One rank sharding API: the sampler, over a Store too (formerly Store.shard_for)."""
    store = open_store(packed_dir)
    for world in (1, 2, 3):
        ranks = [EpochSampler(store, world, r, order=order, ranks_per_node=1, window=1, seed=1,
                              drop_last=True) for r in range(world)]  # fmt: skip
        got = [[i for i, _ in s] for s in ranks]
        assert len({len(g) for g in got}) == 1
        got_all = flat(got)
        assert len(set(got_all)) == len(got_all) and set(got_all) <= set(range(len(store)))
        if order == "nodes":  # whole parts per rank
            parts = [set(store.parts_of(np.array(g, np.int64)).tolist()) for g in got]
            assert all(not (a & b) for k, a in enumerate(parts) for b in parts[k + 1 :])
        else:
            assert len(store) - len(got_all) < world

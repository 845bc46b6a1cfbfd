"""Resources follow what a process reads, not the size of the store: a 1,000-part store is
read in random order, and by a 2-worker DataLoader, under a 256-descriptor limit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from sa1b_pack import StoreError, open_store, pack
from sa1b_pack.testing.synth import synth_shards

PARTS = 1000
FD_LIMIT = 256
FD_BOUND = 32  # what any reading process may hold, whatever the number of parts

CHILD = """
import json, os, resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, ({limit}, {limit}))
import numpy as np
import torch
from torch.utils.data import DataLoader
from sa1b_pack import open_store
from sa1b_pack.torch import SA1BDataset

def fds():
    return len(os.listdir("/proc/self/fd"))

store = open_store(sys.argv[1])
most, seen = 0, 0
for k, i in enumerate(np.random.default_rng(0).permutation(len(store))):
    s = store[int(i)]
    seen += s.image_id > 0 and len(bytes(s.jpeg)) > 0
    if len(s):
        s.masks([0], size=(8, 8))
    most = max(most, fds())
maps = sum(1 for line in open("/proc/self/maps") if "/parts/" in line)

class Counting(SA1BDataset):
    def __getitem__(self, i):
        sample = super().__getitem__(i)
        sample["fds"] = fds()
        return sample

ds = Counting(sys.argv[1], image_size=32, mask_size=8, max_masks=2)
order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(0)).tolist()
loader = DataLoader(ds, batch_size=4, num_workers=2, sampler=order,
                    collate_fn=lambda batch: ([s["image_id"] for s in batch],
                                              [s["fds"] for s in batch]))
ids, worker_fds = [], []
for batch_ids, batch_fds in loader:
    ids += batch_ids
    worker_fds += batch_fds
print(json.dumps({{"samples": len(store), "seen": int(seen), "main_fds": most, "maps": maps,
                  "loaded": len(ids), "distinct": len(set(ids)), "dataset": len(ds),
                  "worker_fds": max(worker_fds)}}))
"""


@pytest.fixture(scope="module")
def thousand_parts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # the test's child reads through a torch DataLoader: skip before packing 1,000 parts
    pytest.importorskip("torch", reason="optional dependency: pip install sa1b-pack[torch]")
    root = tmp_path_factory.mktemp("thousand")
    synth_shards(root / "src", range(PARTS), 2, small=True, seed=1, jobs=2, progress=False)
    report = pack(root / "src", root / "store", list(range(PARTS)), jobs=2, progress=False)
    assert report.ok and len(report.packed) == PARTS
    return root / "store"


@pytest.mark.slow
def test_a_thousand_parts_under_a_256_descriptor_limit(thousand_parts: Path) -> None:
    code = CHILD.format(limit=FD_LIMIT)
    proc = subprocess.run([sys.executable, "-c", code, str(thousand_parts)],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["seen"] == got["samples"] == 2 * PARTS
    assert got["loaded"] == got["distinct"] == got["dataset"] >= PARTS // 2
    assert got["main_fds"] <= FD_BOUND, got
    assert got["worker_fds"] <= FD_BOUND, got
    # at most max_open_parts parts stay mapped (4 files each hold bytes here)
    assert got["maps"] <= 5 * 64, got


def test_open_parts_are_bounded_and_reopen_equal(packed_dir: Path) -> None:
    store = open_store(packed_dir, max_open_parts=1)
    first = store[0]
    ids = first.mask_ids.copy()
    for i in range(len(store)):  # every part in turn: one stays open
        assert store[i].image_id > 0
        assert len(store._parts) == 1
    np.testing.assert_array_equal(first.mask_ids, ids)  # views of a closed part stay valid
    np.testing.assert_array_equal(store[0].mask_ids, ids)
    with pytest.raises(ValueError, match="max_open_parts"):
        open_store(packed_dir, max_open_parts=0)


def _write_with_bad_offsets(path: Path) -> None:
    """annotations.arrow whose ``extra`` string offsets point past the data (a flipped bit
    in the offsets buffer): Arrow's cheap validation checks only the ends, a read would
    follow it."""
    table = pa.ipc.open_file(pa.BufferReader(path.read_bytes())).read_all().combine_chunks()
    extra = table.column("extra").chunk(0)
    offsets = np.frombuffer(extra.buffers()[1], np.int32).copy()
    offsets[len(offsets) // 2] += 1 << 20  # first and last stay plausible
    bad = pa.Array.from_buffers(pa.string(), len(extra),
                                [extra.buffers()[0], pa.py_buffer(offsets), extra.buffers()[2]],
                                null_count=extra.null_count)  # fmt: skip
    table = table.set_column(table.schema.get_field_index("extra"), "extra", bad)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)


def test_corrupt_offsets_are_an_error_on_open_not_a_crash(packed_dir: Path, tmp_path: Path):
    import shutil

    copy = tmp_path / "store"
    shutil.copytree(packed_dir, copy)
    _write_with_bad_offsets(copy / "parts" / "sa_000001" / "annotations.arrow")
    store = open_store(copy)
    assert store[0].image_id > 0  # other parts read as before
    with pytest.raises(StoreError, match="offsets of extra out of bounds"):
        store[store.part_start(1)]

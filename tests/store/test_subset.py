"""Named subsets: id lists in every form projects ship, a store's indices of them, training on
one (composed with the quality filters), and packing only one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sa1b_pack import StoreError, open_store
from sa1b_pack.cli import main
from sa1b_pack.store.manifest import read_manifest
from sa1b_pack.store.subset import image_id_of, read_ids
from sa1b_pack.torch import SA1BDataset
from sa1b_pack.write.packer import pack


def test_every_form_of_an_entry(tmp_path: Path) -> None:
    listing = tmp_path / "edgesam_1pct.txt"
    listing.write_text(
        "# EdgeSAM-style list\nsa_223750.jpg\n\n  17  \nsa_000020/sa_5.json\nsa_9  # note\n17\n"
    )
    assert read_ids(listing).tolist() == [5, 9, 17, 223750]
    assert read_ids([3, "sa_2.jpg", np.int64(1)]).tolist() == [1, 2, 3]
    assert image_id_of("images/sa_44.jpg") == 44
    listing.write_text("sa_1.jpg\nsa_2.png\n")
    with pytest.raises(ValueError, match=r"edgesam_1pct.txt, line 2: 'sa_2.png' is not"):
        read_ids(listing)


def test_store_subset(packed_dir: Path) -> None:
    store = open_store(packed_dir)
    ids = [store[i].image_id for i in range(len(store))]
    chosen = [ids[3], ids[0], ids[-1]]
    indices = store.subset([f"sa_{i}.jpg" for i in chosen])
    assert indices.tolist() == sorted([0, 3, len(store) - 1])
    missing = max(ids) + 1000
    with pytest.raises(KeyError, match=rf"1 of 4 image ids are not in .*: {missing} "):
        store.subset([*chosen, missing])
    assert store.subset([*chosen, missing], missing="ignore").tolist() == indices.tolist()


def test_dataset_on_a_subset_keeps_the_quality_filters(packed_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="optional dependency: pip install sa1b-pack[torch]")

    store = open_store(packed_dir)
    every = SA1BDataset(store)
    filtered = SA1BDataset(store, min_predicted_iou=0.9)
    wanted = [store[i].image_id for i in range(0, len(store), 2)]
    listing = tmp_path / "subset.txt"
    listing.write_text("\n".join(f"sa_{i}.jpg" for i in wanted))
    on_subset = SA1BDataset(store, subset=listing)
    both = SA1BDataset(store, subset=wanted, min_predicted_iou=0.9)
    expected = [int(i) for i in every.index if store[int(i)].image_id in set(wanted)]
    assert on_subset.index.tolist() == expected and 0 < len(on_subset) < len(every)
    assert set(both.index.tolist()) == set(expected) & set(filtered.index.tolist())
    assert {on_subset[k]["image_id"] for k in range(len(on_subset))} <= set(wanted)


def test_pack_a_subset(source_dir: Path, packed_dir: Path, tmp_path: Path, capsys) -> None:
    full = open_store(packed_dir)
    wanted = [full[i].image_id for i in (1, 4, 10, 20)]
    listing = tmp_path / "ids.txt"
    listing.write_text("\n".join(map(str, wanted)) + "\n")
    dst = tmp_path / "subset-store"
    assert main(["pack", str(source_dir), str(dst), "--subset", str(listing), "--quiet"]) == 0
    store = open_store(dst)
    assert [store[i].image_id for i in range(len(store))] == sorted(wanted)
    for i in range(len(store)):
        original = full[full.index_of(store[i].image_id)]
        assert bytes(store[i].jpeg) == bytes(original.jpeg)
        assert store[i].document() == original.document()
    manifest = read_manifest(dst)
    assert manifest["subset"]["file"] == "ids.txt" and manifest["subset"]["images"] == 4
    outside = sum(e["outside_subset"] for e in manifest["shards"].values())
    assert outside == len(full) - 4 and not any(
        e["skipped_members"] for e in manifest["shards"].values()
    )
    capsys.readouterr()
    assert main(["info", str(dst)]) == 0 and "ids.txt (4 ids)" in capsys.readouterr().out
    listing.write_text("\n".join(map(str, wanted[:2])))
    with pytest.raises(StoreError, match=r"packed with the subset ids.txt \(4 ids\)"):
        pack(source_dir, dst, [0], progress=False, subset=listing)

"""The reader: open a store, serve sample ``i`` by index with memmap slicing and no copies.

Opening reads only the manifest. A part's tables (uncompressed Arrow IPC) and payloads are
memory-mapped on first touch, once per process: a store created before ``fork`` re-opens its
maps in the child, and pickling (``spawn`` workers) carries only the path. Everything handed
out is a read-only view.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import simplejpeg

from ..codec import rle as mask_codec
from .manifest import StoreError, read_manifest
from .parts import Part, prefetch
from .remote import RemotePart, is_remote
from .spanner import Spanner


class Sample:
    """Sample ``local`` of a part; fields are read on access, arrays are read-only views."""

    __slots__ = ("_lo", "_n", "_part", "local", "shard")

    def __init__(self, part: Part, local: int) -> None:
        self._part = part
        self.local = local
        self.shard = part.name
        self._lo = int(part.mask_start[local])
        self._n = int(part.mask_count[local])

    def __len__(self) -> int:
        """Number of masks."""
        return self._n

    def __repr__(self) -> str:
        return f"Sample(shard={self.shard!r}, image_id={self.image_id}, masks={self._n})"

    @property
    def image_id(self) -> int:
        return int(self._part.image_id[self.local])

    @property
    def file_name(self) -> str:
        return self._part.file_name[self.local].as_py()

    @property
    def width(self) -> int:
        return int(self._part.width[self.local])

    @property
    def height(self) -> int:
        return int(self._part.height[self.local])

    @property
    def jpeg(self) -> memoryview:
        """The JPEG member's bytes, unmodified (a read-only view into the payload)."""
        start = int(self._part.jpeg_offset[self.local])
        size = int(self._part.jpeg_size[self.local])
        prefetch(self._part.jpeg, start, size)
        return memoryview(self._part.jpeg[start : start + size])

    @property
    def resized_jpeg(self) -> memoryview | None:
        """The pre-resized JPEG (store packed with --image-longest), else None."""
        size = int(self._part.resized_size[self.local])
        if size == 0:
            return None
        start = int(self._part.resized_offset[self.local])
        prefetch(self._part.resized, start, size)
        return memoryview(self._part.resized[start : start + size])

    def image(self) -> np.ndarray:
        """(H, W, 3) uint8 RGB, decoded by libjpeg-turbo."""
        return simplejpeg.decode_jpeg(self.jpeg, colorspace="RGB")

    def _slice(self, column: np.ndarray) -> np.ndarray:
        return column[self._lo : self._lo + self._n]

    @property
    def ids(self) -> np.ndarray:
        return self._slice(self._part.ids)

    @property
    def bbox(self) -> np.ndarray:
        """(N, 4) float64 [x, y, w, h], as the source has it."""
        return self._slice(self._part.bbox)

    @property
    def area(self) -> np.ndarray:
        return self._slice(self._part.area)

    @property
    def predicted_iou(self) -> np.ndarray:
        return self._slice(self._part.predicted_iou)

    @property
    def stability_score(self) -> np.ndarray:
        return self._slice(self._part.stability_score)

    @property
    def crop_box(self) -> np.ndarray:
        return self._slice(self._part.crop_box)

    @property
    def point_coords(self) -> np.ndarray | list[np.ndarray]:
        """(N, P, 2) float64 if every mask has P points (SA-1B: P = 1), else a list of (P_j, 2)."""
        offsets = self._part.point_offsets[self._lo : self._lo + self._n + 1]
        points = self._part.points
        counts = np.diff(offsets)
        if self._n == 0:
            return points[:0].reshape(0, 1, 2)
        if (counts == counts[0]).all():
            return points[offsets[0] : offsets[-1]].reshape(self._n, int(counts[0]), 2)
        return [points[a:b] for a, b in itertools.pairwise(offsets)]

    def _runs(self, indices: Sequence[int] | np.ndarray | None) -> tuple[np.ndarray, ...]:
        """(runs, offsets, counts) of the chosen masks, parsed from their COCO strings."""
        offsets = self._slice(self._part.counts_offset)
        sizes = self._slice(self._part.counts_size)
        if indices is not None:
            chosen = np.asarray(indices, dtype=np.int64).reshape(-1)
            bad = (chosen < 0) | (chosen >= self._n)
            if bad.any():
                raise IndexError(f"mask {int(chosen[bad][0])} out of range for {self._n} masks")
            offsets, sizes = offsets[chosen], sizes[chosen]
        try:
            return mask_codec.parse_strings(
                np.asarray(self._part.counts), offsets, sizes, self.height, self.width
            )
        except ValueError as exc:
            raise StoreError(f"{self.shard}, image {self.image_id}: corrupt store: {exc}") from None

    def masks(
        self,
        indices: Sequence[int] | np.ndarray | None = None,
        *,
        size: tuple[int, int] | None = None,
        longest: int | None = None,
        pad: bool = False,
        out: np.ndarray | None = None,
        parallel: bool = False,
    ) -> np.ndarray:
        """Masks as (K, h, w) uint8 (or bool via ``out``), equal to pycocotools.mask.decode.

        ``indices`` decodes only those masks, in that order (default: all, source order).
        ``size=(h, w)`` resamples by nearest neighbour from the runs (see masks.decode);
        ``longest=L`` is SAM's ResizeLongestSide(L), and ``pad=True`` zero-pads it to (L, L).
        ``out`` is a reused output buffer: no allocation. ``parallel`` spreads masks over numba
        threads (for analysis; DataLoader workers are already parallel).
        """
        runs, offsets, counts = self._runs(indices)
        height, width = self.height, self.width
        if longest is not None:
            if size is not None:
                raise ValueError("give size or longest, not both")
            return mask_codec.decode_padded(
                runs, offsets, counts, height, width, longest=longest, pad=pad, out=out,
                parallel=parallel,
            )  # fmt: skip
        if pad:
            raise ValueError("pad needs longest")
        return mask_codec.decode(
            runs, offsets, counts, height, width, size=size, out=out, parallel=parallel
        )

    def _intersections(self, indices: Sequence[int] | np.ndarray | None) -> np.ndarray:
        return mask_codec.intersections(*self._runs(indices))

    def mask_iou(self, indices: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """(K, K) pairwise IoU from the runs, equal to pycocotools.mask.iou(..., iscrowd=0)."""
        return mask_codec.iou(self._intersections(indices))

    def mask_containment(self, indices: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """C[a, b] = |A ∩ B| / |B|: the share of mask b inside mask a (part/whole structure)."""
        return mask_codec.containment(self._intersections(indices))

    def runs(self, j: int) -> np.ndarray:
        """Run lengths (uint32, column-major, starting with zeros) of mask ``j``."""
        runs, _, counts = self._runs([j])
        runs = runs[: counts[0]]
        runs.setflags(write=False)
        return runs

    def rle(self, j: int) -> dict[str, Any]:
        """Mask ``j`` as COCO RLE: ``counts`` is the source string, byte for byte."""
        if not 0 <= j < self._n:
            raise IndexError(f"mask {j} out of range for {self._n} masks")
        start = int(self._part.counts_offset[self._lo + j])
        end = start + int(self._part.counts_size[self._lo + j])
        counts = self._part.counts[start:end].tobytes().decode("ascii", errors="replace")
        return {"size": [self.height, self.width], "counts": counts}


def _extra(column: Any, row: int) -> dict[str, Any]:
    value = column[row].as_py()
    return orjson.loads(value) if value is not None else {}


def source_document(sample: Sample) -> dict[str, Any]:
    """The sample's ``sa_<N>.json`` as a dict, rebuilt from the store: equal to the source's.

    Used by ``verify --source`` and the round-trip tests; numbers compare equal to the
    source's (a bbox written as ints comes back as floats).
    """
    part, lo = sample._part, sample._lo
    extra = _extra(part.image_extra, sample.local)
    image = {
        "image_id": sample.image_id,
        "width": sample.width,
        "height": sample.height,
        "file_name": sample.file_name,
        **extra.pop("image", {}),
    }
    points = sample.point_coords
    annotations = []
    for j in range(len(sample)):
        more = _extra(part.mask_extra, lo + j)
        rle = sample.rle(j)
        annotations.append(
            {
                "id": int(part.ids[lo + j]),
                "segmentation": {**rle, **more.pop("segmentation", {})},
                "area": int(part.area[lo + j]),
                "bbox": part.bbox[lo + j].tolist(),
                "predicted_iou": float(part.predicted_iou[lo + j]),
                "stability_score": float(part.stability_score[lo + j]),
                "point_coords": points[j].tolist(),
                "crop_box": part.crop_box[lo + j].tolist(),
                **more,
            }
        )
    return {"image": image, "annotations": annotations, **extra}


class Store:
    """A packed store: ``store[i]`` is image i, shards ascending, image ids ascending within."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.remote = is_remote(root)
        self.root: Path | str = os.fspath(root).rstrip("/") if self.remote else Path(root)
        self.manifest = read_manifest(self.root)
        entries = self.manifest["shards"]
        self.shards = sorted(entries, key=lambda n: entries[n]["index"])
        self._spanner = Spanner([entries[n]["images"] for n in self.shards])
        self._parts: dict[int, Part] = {}
        self._pid = os.getpid()
        self._by_id: tuple[np.ndarray, np.ndarray] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"root": self.root}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["root"])

    def __len__(self) -> int:
        return len(self._spanner)

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r}, shards={len(self.shards)}, images={len(self)})"

    def part(self, p: int) -> Part | RemotePart:
        if self._pid != os.getpid():  # forked: maps are re-opened per process
            self._parts, self._pid = {}, os.getpid()
        part = self._parts.get(p)
        if part is None:
            name = self.shards[p]
            try:
                kind = RemotePart if self.remote else Part
                part = self._parts[p] = kind(self.root, name, self.manifest["shards"][name])
            except (KeyError, TypeError) as exc:
                raise StoreError(
                    f"{self.root}: manifest entry of {name} is corrupt ({exc})"
                ) from None
        return part

    def __getitem__(self, index: int) -> Sample:
        p, local = self._spanner.locate(index)
        if self.remote:
            return Sample(self.part(p).window(local), 0)
        return Sample(self.part(p), local)

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    @property
    def image_longest(self) -> int | None:
        """Longest side of the pre-resized JPEGs every sample carries, or None."""
        return self.manifest.get("image_longest")

    @cached_property
    def num_masks(self) -> int:
        return sum(self.manifest["shards"][n]["masks"] for n in self.shards)

    def shard_for(
        self, rank: int, world_size: int, *, epoch: int = 0, seed: int = 0, by_part: bool = False
    ) -> np.ndarray:
        """Global indices of rank ``rank``'s images for an epoch, drawn from (seed, epoch).

        Default: one permutation of all images dealt round-robin: ranks are disjoint, cover
        the store and differ in size by at most one. ``by_part=True`` deals whole parts instead
        (a permutation of parts, round-robin), shuffles images within the rank's parts, and
        cuts every rank to the smallest rank's count so all ranks take the same number of
        steps: each process then touches only its own parts (the first-touch cost that
        dominates at 1,000 ranks on object storage, docs/scaling.md), at the price of
        less mixing within an epoch and dropping at most a few images per epoch.
        """
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} out of range for world size {world_size}")
        rng = np.random.default_rng((seed, epoch))
        if not by_part:
            return rng.permutation(len(self))[rank::world_size]
        parts = len(self.shards)
        if world_size > parts:
            raise ValueError(f"by_part needs at least one part per rank: {parts} parts, "
                             f"{world_size} ranks")  # fmt: skip
        dealt = rng.permutation(parts)
        sizes = self._spanner.ends - self._spanner.starts
        counts = [int(sizes[dealt[r::world_size]].sum()) for r in range(world_size)]
        mine = dealt[rank::world_size]
        images = np.concatenate(
            [np.arange(self._spanner.starts[p], self._spanner.ends[p]) for p in mine]
        )
        return rng.permutation(images)[: min(counts)]

    def index_of(self, image_id: int) -> int:
        """Global index of an image id; KeyError if the store does not hold it."""
        if self._by_id is None:
            ids = np.concatenate([self.part(p).image_id for p in range(len(self.shards))] or [[]])
            order = np.argsort(ids, kind="stable")
            self._by_id = (ids[order], order)
        ids, order = self._by_id
        k = int(np.searchsorted(ids, image_id))
        if k == len(ids) or ids[k] != image_id:
            raise KeyError(f"image id {image_id} is not in {self.root}")
        return int(order[k])

    def errors(self) -> list[dict[str, str]]:
        """What packing left out, per committed shard: bad samples skipped (``kind`` "error",
        with ``--on-error skip``) and stray or unpaired members (``kind`` "skipped")."""
        rows = []
        for name in self.shards:
            entry = self.manifest["shards"][name]
            for kind, key in (("error", "errors"), ("skipped", "skipped_members")):
                for member, reason in entry.get(key, []):
                    rows.append({"shard": name, "member": member, "kind": kind, "reason": reason})
        return rows

    def info(self) -> dict[str, Any]:
        """Shards, images, masks, bytes and format version, from the manifest alone."""
        entries = self.manifest["shards"]
        store_bytes = sum(f["bytes"] for n in self.shards for f in entries[n]["files"].values())
        return {
            "root": str(self.root),
            "format_version": self.manifest["format_version"],
            "image_longest": self.image_longest,
            "shards": len(self.shards),
            "images": len(self),
            "masks": self.num_masks,
            "store_bytes": store_bytes,
            "source_bytes": sum(entries[n]["source"]["bytes"] for n in self.shards),
            "skipped_members": sum(len(entries[n]["skipped_members"]) for n in self.shards),
            "errors": sum(len(entries[n].get("errors", [])) for n in self.shards),
        }


def open_store(root: str | os.PathLike) -> Store:
    """Open a packed store; reads the manifest only. StoreError if it is not one."""
    return Store(root)

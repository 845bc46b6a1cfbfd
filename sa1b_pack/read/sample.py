"""One sample of a store: its fields read on access, arrays as read-only views, masks decoded
from the stored COCO strings straight to the size asked for.

Written once against the part protocol (parts.py), so the same code serves memory-mapped
local parts and byte-range parts on object storage.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import simplejpeg

from ..codec import rle as mask_codec
from ..errors import ConfigError, StoreError
from ..format.columns import IMAGE_COLUMNS, MASK_COLUMNS, Column
from ..format.files import JPEG_PAYLOAD, RESIZED_PAYLOAD
from ..source.document import build_document
from .parts import Part, attached_spec

Indices = Sequence[int] | np.ndarray | None


class Sample:
    """Sample ``local`` of a part; fields are read on access, arrays are read-only views."""

    __slots__ = ("_images", "_lo", "_n", "_part", "local", "shard")

    def __init__(self, part: Part, local: int) -> None:
        self._part = part
        self._images = images = part.images
        self.local = local
        self.shard = part.name
        self._lo = int(images["mask_start"][local])
        self._n = int(images["mask_count"][local])

    def __len__(self) -> int:
        """Number of masks."""
        return self._n

    def __repr__(self) -> str:
        return f"Sample(shard={self.shard!r}, image_id={self.image_id}, masks={self._n})"

    def _image(self, name: str) -> Any:
        return self._images[name][self.local]

    def _mask(self, name: str) -> Any:
        return self._part.mask_slice(name, self._lo, self._n)

    @property
    def image_id(self) -> int:
        return int(self._images["image_id"][self.local])

    @property
    def file_name(self) -> str:
        return self._image("file_name").as_py()

    @property
    def width(self) -> int:
        return int(self._images["width"][self.local])

    @property
    def height(self) -> int:
        return int(self._images["height"][self.local])

    def _payload(self, file: str, offset: str, size: str) -> memoryview:
        start, length = int(self._image(offset)), int(self._image(size))
        return memoryview(self._part.payload(file, start, length))

    @property
    def jpeg(self) -> memoryview:
        """The JPEG member's bytes, unmodified (a read-only view into the payload)."""
        return self._payload(JPEG_PAYLOAD, "jpeg_offset", "jpeg_size")

    @property
    def resized_jpeg(self) -> memoryview | None:
        """The pre-resized JPEG (store packed with --image-longest), else None."""
        if int(self._image("resized_size")) == 0:
            return None
        return self._payload(RESIZED_PAYLOAD, "resized_offset", "resized_size")

    def image(self) -> np.ndarray:
        """(H, W, 3) uint8 RGB, decoded by libjpeg-turbo."""
        return simplejpeg.decode_jpeg(self.jpeg, colorspace="RGB")

    def attached(self, name: str) -> np.ndarray:
        """This image's row of the array attached as ``name`` (``sa1b-pack attach``): a
        read-only view, dtype and shape as attached; zeros if the image had none (see
        ``attached_present``). StoreError if the shard has no such array."""
        return self._part.attached(name, self.local)

    def attached_present(self, name: str) -> bool:
        """False if the image had no array when ``name`` was attached (--allow-missing)."""
        attached_spec(self.shard, self._part.entry, name)  # StoreError if there is none
        missing = self._part.entry["attached"][name]["missing"]  # sorted image ids
        k = bisect.bisect_left(missing, self.image_id)
        return k == len(missing) or missing[k] != self.image_id

    @property
    def point_coords(self) -> np.ndarray | list[np.ndarray]:
        """(N, P, 2) float64 if every mask has P points (SA-1B: P = 1), else a list of (P_j, 2)."""
        offsets, points = self._part.mask_points(self._lo, self._n)
        counts = np.diff(offsets)
        if self._n == 0:
            return points[:0].reshape(0, 1, 2)
        if (counts == counts[0]).all():
            return points[offsets[0] : offsets[-1]].reshape(self._n, int(counts[0]), 2)
        return [points[a:b] for a, b in itertools.pairwise(offsets)]

    def _strings(self, indices: Indices) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(data, offsets, sizes) of the chosen masks' COCO strings."""
        offsets, sizes = self._mask("counts_offset"), self._mask("counts_size")
        if indices is not None:
            chosen = np.asarray(indices, dtype=np.int64).reshape(-1)
            bad = (chosen < 0) | (chosen >= self._n)
            if bad.any():
                raise IndexError(f"mask {int(chosen[bad][0])} out of range for {self._n} masks")
            offsets, sizes = offsets[chosen], sizes[chosen]
        data, offsets = self._part.strings(offsets, sizes)
        return data, offsets, sizes

    def _runs(self, indices: Indices) -> tuple[np.ndarray, ...]:
        """(runs, offsets, counts) of the chosen masks, parsed from their COCO strings."""
        try:
            return mask_codec.parse_strings(*self._strings(indices), self.height, self.width)
        except ValueError as exc:
            raise StoreError(f"{self.shard}, image {self.image_id}: corrupt store: {exc}") from None

    def masks(
        self,
        indices: Indices = None,
        *,
        size: tuple[int, int] | None = None,
        longest: int | None = None,
        pad: bool = False,
        out: np.ndarray | None = None,
        parallel: bool = False,
    ) -> np.ndarray:
        """Masks as (K, h, w) uint8 (or bool via ``out``), equal to pycocotools.mask.decode.

        ``indices`` decodes only those masks, in that order (default: all, source order).
        ``size=(h, w)`` resamples by nearest neighbour from the runs (see codec.rle.decode);
        ``longest=L`` is SAM's ResizeLongestSide(L), and ``pad=True`` zero-pads it to (L, L).
        ``out`` is a reused output buffer: no allocation. ``parallel`` spreads masks over numba
        threads (for analysis; DataLoader workers are already parallel).
        """
        runs, offsets, counts = self._runs(indices)
        height, width = self.height, self.width
        if longest is not None:
            if size is not None:
                raise ConfigError("give size or longest, not both")
            return mask_codec.decode_padded(
                runs, offsets, counts, height, width, longest=longest, pad=pad, out=out,
                parallel=parallel,
            )  # fmt: skip
        if pad:
            raise ConfigError("pad needs longest")
        return mask_codec.decode(
            runs, offsets, counts, height, width, size=size, out=out, parallel=parallel
        )

    def mask_runs(self, indices: Indices = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(runs, offsets, counts) of the chosen masks, parsed once for the codec's functions
        (``decode_padded``, ``intersections``, ``centroids``...) to share."""
        return self._runs(indices)

    def mask_iou(self, indices: Indices = None) -> np.ndarray:
        """(K, K) pairwise IoU from the runs, equal to pycocotools.mask.iou(..., iscrowd=0)."""
        return mask_codec.iou(mask_codec.intersections(*self._runs(indices)))

    def mask_containment(self, indices: Indices = None) -> np.ndarray:
        """C[i, j] = |i ∩ j| / |i|: the fraction of mask i inside mask j (part/whole structure),
        as the training batch's ``containment``."""
        return mask_codec.containment(mask_codec.intersections(*self._runs(indices)))

    def runs(self, j: int) -> np.ndarray:
        """Run lengths (uint32, column-major, starting with zeros) of mask ``j``."""
        runs, _, counts = self._runs([j])
        runs = runs[: counts[0]]
        runs.setflags(write=False)
        return runs

    def _string(self, data: np.ndarray, offset: int, size: int) -> str:
        return data[offset : offset + size].tobytes().decode("ascii", errors="replace")

    def rle(self, j: int) -> dict[str, Any]:
        """Mask ``j`` as COCO RLE: ``counts`` is the source string, byte for byte (for a mask
        given as uncompressed RLE, its pycocotools string; ``document()`` gives the list)."""
        if not 0 <= j < self._n:
            raise IndexError(f"mask {j} out of range for {self._n} masks")
        data, offsets, sizes = self._strings([j])
        counts = self._string(data, int(offsets[0]), int(sizes[0]))
        return {"size": [self.height, self.width], "counts": counts}

    def document(self) -> dict[str, Any]:
        """The sample's ``sa_<N>.json`` as a dict, rebuilt from the store: equal to the
        source's (used by ``verify --source`` and the round-trip tests)."""
        image = {c.name: self._image(c.name) for c in IMAGE_COLUMNS if c.source}
        masks = {c.name: self._mask(c.name) for c in MASK_COLUMNS if c.source and not c.ragged}
        masks["point_coords"] = self.point_coords  # ragged: as the API hands it out
        data, offsets, sizes = self._strings(None)
        strings = [self._string(data, int(o), int(s)) for o, s in zip(offsets, sizes, strict=True)]
        extras = self._mask("extra")
        return build_document(
            image, masks, strings, self._image("extra").as_py(),
            [extras[j].as_py() for j in range(self._n)],
        )  # fmt: skip


def _mask_accessor(column: Column) -> property:
    name = column.name
    shape = f"(N, {column.width})" if column.width else "(N,)"

    def get(self: Sample) -> np.ndarray:
        return self._part.mask_slice(name, self._lo, self._n)

    get.__doc__ = f"{shape} {column.numpy_dtype} ``{column.source}`` of each mask, source order."
    return property(get)


# One accessor per copied numeric mask column (mask_ids, bbox, area, predicted_iou...): a
# column added to format/columns.py is readable here with no code; ragged point_coords above.
for _column in MASK_COLUMNS:
    if _column.source is not None and _column.numeric:
        setattr(Sample, _column.attribute or _column.name, _mask_accessor(_column))

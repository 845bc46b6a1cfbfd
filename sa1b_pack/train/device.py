"""The device stage of ``SA1BLoader(..., device="cuda")``: batches finished on the device from
what CPU threads staged (a torch-using module, like train/torch.py).

Per batch: loader threads stage the samples (train/device_batch.py: store read, mask draw,
fields, the masks' runs, the JPEG bytes); the consumer packs them into one pinned buffer and
copies it to the device in one transfer; then, on a CUDA stream of its own and up to ``ahead``
batches before the training loop takes them, the device decodes the JPEGs in one batched call
(train/gpu_jpeg.py), resizes and pads them as the CPU recipe does (train/device_images.py) and
expands the masks straight from their runs (train/device_masks.py, bit-exact). JPEGs the
device decoder cannot take were decoded by the CPU recipe in the threads, counted in
``stats``. Only the consumer thread touches the device, never a DataLoader worker.

``device="cpu"`` runs the same torch code with threads decoding each JPEG full size
(simplejpeg): the batches equal the CPU loader's, masks exactly, images within the resize
tolerance documented in train/device_images.py.
"""

from __future__ import annotations

import contextlib
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch

from ..codec.jpeg import decode_image
from . import fields
from .device_batch import HostBatch, StagedBuffer, pack
from .device_images import place_images
from .device_masks import expand_masks
from .gpu_jpeg import NvImageCodecDecoder

MASK_CHUNK = 1024  # masks expanded at once: ~200 MB of device scratch at 256 x 256


def resolve_device(device: str | torch.device) -> torch.device:
    """A torch.device the stage can run on: "cpu", or a CUDA device that is present."""
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            built = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU build"
            raise RuntimeError(f"SA1BLoader(device={str(device)!r}): no CUDA device is available "
                               f"(torch {torch.__version__}, {built}); use device='cpu', or "
                               "device=None for the CPU loader")  # fmt: skip
        return torch.device("cuda", torch.cuda.current_device() if device.index is None
                            else device.index)  # fmt: skip
    if device.type != "cpu":
        raise ValueError(f"SA1BLoader supports device='cuda' or 'cpu', got {str(device)!r}")
    return device


class DeviceStage:
    """Finishes staged batches on ``device``; ``stats`` counts where each image was decoded:
    ``gpu_decoded`` (nvImageCodec), ``cpu_decoded`` (device="cpu": simplejpeg, then the
    torch resize), ``cpu_fallback`` (the CPU recipe, per image), ``fallback_reasons``."""

    def __init__(self, dataset: Any, device: str | torch.device, *, ahead: int = 2,
                 mask_chunk: int = MASK_CHUNK) -> None:  # fmt: skip
        if getattr(dataset, "transform", None) or getattr(dataset, "mask_transform", None):
            raise ValueError("the device stage has no per-sample numpy transforms: apply "
                             "augmentations to the device batch, or use device=None")  # fmt: skip
        self.device = resolve_device(device)
        self.cuda = self.device.type == "cuda"
        self.dataset, self.recipe = dataset, dataset.recipe
        self.attached = getattr(dataset, "attached", None) or {}
        self.ahead = ahead if self.cuda else 0  # on the CPU every step is synchronous
        self.mask_chunk = mask_chunk
        self.decoder = NvImageCodecDecoder(self.device) if self.cuda else None
        self.host_decode = self.decoder is None  # threads decode full size (device="cpu")
        self.stream = torch.cuda.Stream(self.device) if self.cuda else None
        self.stats: dict[str, Any] = {"batches": 0, "images": 0, "gpu_decoded": 0,
                                      "cpu_decoded": 0, "cpu_fallback": 0,
                                      "fallback_reasons": Counter()}  # fmt: skip
        self._retired: deque[tuple[Any, Any]] = deque()

    def buffer(self, batch_size: int) -> StagedBuffer:
        """A batch buffer for the threaded loader (``threaded_batches(buffer=...)``)."""
        return StagedBuffer(batch_size, host_decode=self.host_decode, attached=self.attached)

    def batches(self, staged: Iterable[tuple[list, Any]]) -> Iterator[tuple[dict, Any]]:
        """(batch of device tensors, sampler state) for each (staged samples, state)."""
        pending: deque[tuple[dict, Any, Any, Any]] = deque()
        for samples, state in staged:
            pending.append(self._launch(samples, state))
            if len(pending) > self.ahead:
                yield self._hand_over(*pending.popleft())
        while pending:
            yield self._hand_over(*pending.popleft())

    def _launch(self, samples: list[dict], state: Any) -> tuple[dict, Any, Any, Any]:
        host = pack(samples, self.recipe, self.attached, self.mask_chunk)
        buffer = torch.empty(host.size, dtype=torch.uint8, pin_memory=self.cuda)
        host.write(buffer.numpy())
        on_stream = torch.cuda.stream(self.stream) if self.cuda else contextlib.nullcontext()
        with on_stream:
            flat = buffer.to(self.device, non_blocking=True)  # the batch's one transfer
            views = {name: _view(flat, *section) for name, section in host.sections.items()}
            batch, keep = self._assemble(host, views)
            event = None
            if self.cuda:
                event = torch.cuda.Event()
                event.record(self.stream)
        self.stats["batches"] += 1
        self.stats["images"] += len(samples)
        return batch, state, event, keep

    def _hand_over(self, batch: dict, state: Any, event: Any, keep: Any) -> tuple[dict, Any]:
        """Order the batch before the consumer's next work, and tell the allocator the
        consumer's stream uses its memory; decoder buffers live until the batch is done."""
        if self.cuda:
            current = torch.cuda.current_stream(self.device)
            current.wait_event(event)
            for tensor in batch.values():
                tensor.record_stream(current)
            self._retired.append((event, keep))
            while self._retired and self._retired[0][0].query():
                self._retired.popleft()
        return batch, state

    def _assemble(self, host: HostBatch, t: dict[str, torch.Tensor]) -> tuple[dict, list]:
        recipe, b = self.recipe, len(host.input_sizes)
        size, m, k = recipe.image_size, recipe.mask_size, t["mask_valid"].shape[1]
        image = torch.zeros((b, size, size, 3), dtype=torch.uint8, device=self.device)
        for j, slot in enumerate(host.fallback):
            image[slot] = t["fallback_images"][j]
        self.stats["cpu_fallback"] += len(host.fallback)
        self.stats["fallback_reasons"].update(host.reasons)
        pixels = {slot: torch.from_numpy(p) for slot, p in host.pixels.items()}
        self.stats["cpu_decoded"] += len(pixels)
        keep: list = []
        if host.jpegs:
            decoded = self.decoder.decode(list(host.jpegs.values()), self.stream)
            keep.append(decoded)
            for slot, px in zip(host.jpegs, decoded, strict=True):
                if px is None:  # the decoder gave up on it: the CPU recipe, counted
                    self._decode_on_cpu(image, slot, host)
                else:
                    pixels[slot] = px
                    self.stats["gpu_decoded"] += 1
        slots = list(pixels)
        place_images(image, slots, [pixels[s] for s in slots],
                     [host.input_sizes[s] for s in slots])  # fmt: skip
        masks = torch.empty((b, k, m, m), dtype=torch.bool, device=self.device)
        flat_masks = masks.view(b * k, m, m)
        for b0, b1, m0, m1, r0, r1 in host.chunks if k else ():
            expand_masks(t["runs"][r0:r1], t["run_offsets"][m0 : m1 + 1] - r0,
                         t["frames"][m0:m1], m, slots=t["slots"][m0:m1] - b0 * k,
                         count=(b1 - b0) * k, out=flat_masks[b0 * k : b1 * k],
                         check=False)  # fmt: skip
        out = {"image": image.permute(0, 3, 1, 2), "masks": masks, "mask_valid": t["mask_valid"]}
        for name in (*fields.per_mask(recipe.relations), *fields.pairwise(recipe.relations)):
            out[name] = t[name]
        for name in ("image_id", *fields.SIZES):
            out[name] = t[name]
        for name in self.attached:
            out[name], out[f"{name}_present"] = t[name], t[f"{name}_present"]
        if getattr(self.dataset, "float_image", False):
            out["image"] = out["image"].float().div_(255.0)
        return out, keep

    def _decode_on_cpu(self, image: torch.Tensor, slot: int, host: HostBatch) -> None:
        size = self.recipe.image_size
        pixels = np.zeros((size, size, 3), np.uint8)
        decode_image(host.jpegs[slot], *host.orig_sizes[slot], size, pixels)
        image[slot].copy_(torch.from_numpy(pixels), non_blocking=False)
        self.stats["cpu_fallback"] += 1
        self.stats["fallback_reasons"]["decoder failed"] += 1


_DTYPES: dict[np.dtype, torch.dtype] = {}


def _view(flat: torch.Tensor, offset: int, dtype: np.dtype, shape: tuple) -> torch.Tensor:
    """Section ``[offset, offset + nbytes)`` of the flat byte buffer as a typed tensor."""
    if dtype not in _DTYPES:
        _DTYPES[dtype] = torch.from_numpy(np.zeros(1, dtype)).dtype
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    return flat[offset : offset + nbytes].view(_DTYPES[dtype]).view(shape)

"""Batched JPEG decode on a CUDA device through nvImageCodec: the only module importing it
(``pip install sa1b-pack[gpu]``, or ``[gpu-cu13]`` for a CUDA 13 torch); torch-using.

Why nvImageCodec: NVIDIA's maintained decoder library, on PyPI for CUDA 12 and 13, batched
(one call per batch, the A100/H100/H200 hardware JPEG engine where there is one, CUDA kernels
otherwise), and tied to no torch build: images reach torch by DLPack, ordered on our stream.
torchvision's ``decode_jpeg(device="cuda")`` needs the torchvision built for the user's exact
torch (and its image decoders are deprecated for TorchCodec's); TorchCodec's is a compiled
torch extension too, for a narrow range of torch versions. See docs/gpu.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

INSTALL = "pip install 'sa1b-pack[gpu]' (CUDA 12 torch) or 'sa1b-pack[gpu-cu13]' (CUDA 13)"


class NvImageCodecDecoder:
    """Decodes a list of JPEGs to (H, W, 3) uint8 RGB tensors on ``device``, on ``stream``.

    Chroma is upsampled like libjpeg-turbo's default (``fancy_upsampling``) and EXIF
    orientation ignored, as the CPU path does. An image the decoder gives up on comes back
    as None (the device stage then decodes it on the CPU, counted).
    """

    def __init__(self, device: torch.device) -> None:
        try:
            from nvidia import nvimgcodec
        except ImportError as exc:
            raise ImportError(f"JPEG decode on {device} needs nvImageCodec: {INSTALL}") from exc
        self._codec = nvimgcodec
        self._decoder = nvimgcodec.Decoder(device_id=device.index or 0,
                                           options=":fancy_upsampling=1")  # fmt: skip
        spec = getattr(nvimgcodec.ColorSpec, "SRGB", None) or nvimgcodec.ColorSpec.RGB
        self._params = nvimgcodec.DecodeParams(color_spec=spec, apply_exif_orientation=False,
                                               allow_any_depth=False)  # fmt: skip

    def decode(self, jpegs: Sequence[Any], stream: torch.cuda.Stream) -> list[torch.Tensor | None]:
        """``jpegs``: host buffers (bytes, memoryview or uint8 arrays, ideally pinned)."""
        streams = [self._codec.CodeStream(bytes(j) if isinstance(j, memoryview) else j)
                   for j in jpegs]  # fmt: skip
        images = self._decoder.decode(streams, params=self._params, cuda_stream=stream.cuda_stream)
        out: list[torch.Tensor | None] = []
        with torch.cuda.stream(stream):  # DLPack hands each image over ordered on our stream
            for image in images:
                out.append(None if image is None else _hwc(torch.from_dlpack(image)))
        return out


def _hwc(pixels: torch.Tensor) -> torch.Tensor:
    """(H, W, 3) whatever layout the decoder chose (interleaved or planar)."""
    if pixels.dim() == 3 and pixels.shape[-1] == 3:
        return pixels
    if pixels.dim() == 3 and pixels.shape[0] == 3:
        return pixels.permute(1, 2, 0)
    raise RuntimeError(f"nvImageCodec returned an image of shape {tuple(pixels.shape)}")

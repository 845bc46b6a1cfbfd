"""Which JPEGs a GPU decoder can take, read from their markers alone (no decode, no deps).

nvJPEG's hardware engine and batched path take sequential Huffman JPEGs (SOF0 baseline, SOF1
extended) of 8-bit samples in 1 or 3 components. Everything else goes to the CPU decoder, per
image: progressive (SOF2), lossless, arithmetic-coded or hierarchical frames, 12-bit samples,
4 components (CMYK / YCCK) and files with an Adobe APP14 segment, whose transform flag changes
the colour space (Photoshop's CMYK and RGB JPEGs). Headers sit at the start of a file, and
segments are skipped by their length, so this reads a few hundred bytes per image.
"""

from __future__ import annotations

from typing import Any

SEQUENTIAL = (0xC0, 0xC1)  # SOF0 baseline, SOF1 extended sequential (Huffman)
PROGRESSIVE = 0xC2
NOT_FRAMES = (0xC4, 0xC8, 0xCC)  # DHT, JPG (reserved), DAC share the 0xC_ range
STANDALONE = {0x01, *range(0xD0, 0xD8)}  # TEM, RSTn: no length field


def cpu_only_reason(data: Any) -> str | None:
    """Why this JPEG must be decoded on the CPU ("progressive", "cmyk", "adobe",
    "12-bit", "frame 0xCn", "no frame header"), or None if a GPU decoder takes it."""
    view = memoryview(data).cast("B")
    if len(view) < 4 or view[0] != 0xFF or view[1] != 0xD8:
        return "no frame header"
    adobe = False
    i = 2
    while i + 4 <= len(view):
        if view[i] != 0xFF:
            return "no frame header"  # garbage between segments: let the CPU decoder say why
        marker = view[i + 1]
        if marker == 0xFF:  # fill byte before a marker
            i += 1
            continue
        if marker in STANDALONE:
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # EOI or SOS before any frame header
            return "no frame header"
        length = view[i + 2] << 8 | view[i + 3]
        segment = view[i + 4 : i + 2 + length]
        if marker == 0xEE and bytes(segment[:5]) == b"Adobe":
            adobe = True
        elif 0xC0 <= marker <= 0xCF and marker not in NOT_FRAMES:
            return _frame_reason(marker, segment, adobe)
        i += 2 + length
    return "no frame header"


def _frame_reason(marker: int, frame: memoryview, adobe: bool) -> str | None:
    if len(frame) < 6:
        return "no frame header"
    if marker == PROGRESSIVE:
        return "progressive"
    if marker not in SEQUENTIAL:
        return f"frame 0x{marker:02X}"
    if frame[5] == 4:
        return "cmyk"
    if adobe:
        return "adobe"
    if frame[0] != 8:
        return f"{frame[0]}-bit"
    if frame[5] not in (1, 3):
        return f"{frame[5]} components"
    return None

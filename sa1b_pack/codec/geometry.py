"""SAM's resize geometry, shared by images, masks, boxes and points: one definition."""

from __future__ import annotations


def resize_longest_shape(height: int, width: int, longest: int) -> tuple[int, int]:
    """SAM ResizeLongestSide target (h, w): longest side to ``longest``, rounded half up."""
    scale = longest / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)

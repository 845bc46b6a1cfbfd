"""PyTorch entry point: ``from sa1b_pack.torch import SA1BDataset, SA1BLoader, SA1BSampler``,
and everything a training loop names (the recipe, collate, the transforms). Imports torch."""

from .train.collate import PER_MASK, collate, release_freed_memory
from .train.loader import SA1BLoader
from .train.recipe import Recipe
from .train.threaded import SampleError
from .train.torch import SA1BDataset, SA1BSampler
from .train.transforms import Compose, HorizontalFlip, ResizeJitter, select_masks

__all__ = [
    "PER_MASK",
    "Compose",
    "HorizontalFlip",
    "Recipe",
    "ResizeJitter",
    "SA1BDataset",
    "SA1BLoader",
    "SA1BSampler",
    "SampleError",
    "collate",
    "release_freed_memory",
    "select_masks",
]

"""PyTorch entry point: ``from sa1b_pack.torch import SA1BDataset, SA1BLoader, SA1BSampler``."""

from .train.recipe import Recipe
from .train.threaded import SampleError
from .train.torch import (
    PER_MASK,
    SA1BDataset,
    SA1BLoader,
    SA1BSampler,
    collate,
    release_freed_memory,
)

__all__ = [
    "PER_MASK",
    "Recipe",
    "SA1BDataset",
    "SA1BLoader",
    "SA1BSampler",
    "SampleError",
    "collate",
    "release_freed_memory",
]

"""PyTorch entry point: ``from sa1b_pack.torch import Recipe, SA1BDataset, collate``."""

from .train.recipe import Recipe
from .train.torch import PER_MASK, SA1BDataset, collate

__all__ = ["PER_MASK", "Recipe", "SA1BDataset", "collate"]

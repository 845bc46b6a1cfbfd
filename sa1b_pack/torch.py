"""PyTorch entry point: ``from sa1b_pack.torch import SA1BDataset, collate``."""

from .train.torch import PER_MASK, SA1BDataset, collate

__all__ = ["PER_MASK", "SA1BDataset", "collate"]

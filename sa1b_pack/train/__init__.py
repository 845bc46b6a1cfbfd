"""Training over a store: the SAM recipe in numpy (recipe.py, with relations.py and the
augmentation contract in transforms.py) and the PyTorch adapters (torch.py, the package's
only torch import)."""

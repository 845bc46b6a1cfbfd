"""Training over a store: the SAM recipe in numpy (recipe.py) and the PyTorch adapters
(torch.py, the package's only torch import)."""

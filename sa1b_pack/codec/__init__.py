"""Pure computation, no I/O: the numba RLE kernels, the mask API over them, JPEG decode/resize
and SAM's resize geometry."""

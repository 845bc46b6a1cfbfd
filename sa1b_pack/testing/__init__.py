"""Test and demo support, never imported by the library: synthetic SA-1B shards and the slow
pure-Python RLE reference the kernels are held equal to."""

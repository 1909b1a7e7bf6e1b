"""Kernels, one folder per op: `reference.py` is the readable spec, fast paths live beside it."""

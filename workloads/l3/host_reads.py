"""Counting device-to-host reads: `count_host_reads()` wraps the Tensor methods that hand a value to
Python (`item`, `tolist`, `numpy`, `__bool__`, `__int__`, `__float__`, `__index__`) for the duration of a
`with` block. On a GPU each such read is a sync; on CPU they are free, so this is how the CPU build
checks the bound the GPU build asserts with `torch.cuda.set_sync_debug_mode` (used by tests and benches).
"""

import contextlib
from collections import Counter
from collections.abc import Iterator

import torch

READ_METHODS = ("item", "tolist", "numpy", "__bool__", "__int__", "__float__", "__index__")


@contextlib.contextmanager
def count_host_reads() -> Iterator[Counter]:
    """Yields a Counter of reads by method name, filled while the block runs (not thread-safe: reads
    by other threads in that window are counted too)."""
    counts: Counter = Counter()
    originals = {name: getattr(torch.Tensor, name) for name in READ_METHODS}

    def wrap(name, original):
        def counted(self, *args, **kwargs):
            counts[name] += 1
            return original(self, *args, **kwargs)

        return counted

    try:
        for name, original in originals.items():
            setattr(torch.Tensor, name, wrap(name, original))
        yield counts
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)

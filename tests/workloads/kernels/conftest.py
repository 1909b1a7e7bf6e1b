"""Kernel tests run the Triton kernels on CPU under the Triton interpreter (numerics only).

TRITON_INTERPRET must be set before `workloads.kernels.l3_lookup.triton_kernels` is imported (the
`@triton.jit` decorator reads it), so it is set here, when pytest loads this directory, and only when no
CUDA device exists: on a GPU host the same tests run the compiled kernels.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

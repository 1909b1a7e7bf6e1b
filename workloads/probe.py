"""What this machine can move: probed read bandwidth and GEMM FLOP/s, and the floor time of a workload.

A speed number means little alone; beside the time the hardware needs at the least it says how far the
code is from the limit. floor_s = max(bytes / read bandwidth, FLOPs / GEMM FLOP/s) — the roofline.
"""

import os
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

# Much larger than any last-level cache here (and than an H100's 50 MiB L2), so the sum reads DRAM/HBM.
READ_PROBE_BYTES = 256 * 2**20


def _median_s(fn, device: torch.device, repeats: int) -> float:
    fn()  # warm-up: first-touch page faults, kernel selection
    samples = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        samples.append(time.perf_counter() - t0)
    return float(np.median(samples))


def read_bytes_per_s(device: torch.device | str = "cpu", nbytes: int = READ_PROBE_BYTES, repeats: int = 7):
    """Bytes/s of a streaming fp32 reduction over `nbytes` (median of `repeats`)."""
    device = torch.device(device)
    x = torch.ones(nbytes // 4, dtype=torch.float32, device=device)
    return x.numel() * 4 / _median_s(x.sum, device, repeats)


def gemm_flop_per_s(
    m: int, k: int, n: int, device: torch.device | str = "cpu", dtype=torch.float32, repeats: int = 7
) -> float:
    """FLOP/s of an (m, k) @ (k, n) matmul, 2·m·k·n FLOPs a call (median of `repeats`)."""
    device = torch.device(device)
    a = torch.randn(m, k, device=device, dtype=dtype)
    b = torch.randn(k, n, device=device, dtype=dtype)
    return 2.0 * m * k * n / _median_s(lambda: a @ b, device, repeats)


@dataclass
class MachineProbe:
    """One probe of the machine, taken at benchmark or job start; `gemm` keys are "m×k×n"."""

    device: str
    threads: int
    read_bytes_per_s: float
    gemm_flop_per_s: dict[str, float] = field(default_factory=dict)
    load_avg_1m: float | None = None

    def flops_per_s(self, m: int, k: int, n: int) -> float:
        """GEMM FLOP/s at this shape, probed on first use and kept."""
        key = f"{m}x{k}x{n}"
        if key not in self.gemm_flop_per_s:
            self.gemm_flop_per_s[key] = gemm_flop_per_s(m, k, n, self.device)
        return self.gemm_flop_per_s[key]

    def peak_flops_per_s(self) -> float:
        """The best FLOP/s probed so far (the bound for FLOPs at shapes that were not probed)."""
        if not self.gemm_flop_per_s:
            self.flops_per_s(1024, 1024, 1024)
        return max(self.gemm_flop_per_s.values())

    def floor_s(self, nbytes: float, flops: float, flop_per_s: float | None = None) -> float:
        """The least time `nbytes` of reads and `flops` can take here (the roofline's max)."""
        return max(nbytes / self.read_bytes_per_s, flops / (flop_per_s or self.peak_flops_per_s()))

    def as_dict(self) -> dict:
        return asdict(self)


def probe(
    device: torch.device | str = "cpu", gemm_shapes: tuple[tuple[int, int, int], ...] = ()
) -> MachineProbe:
    """Probe read bandwidth (and GEMM FLOP/s at `gemm_shapes`) at torch's current thread count."""
    device = torch.device(device)
    p = MachineProbe(
        device=str(device),
        threads=torch.get_num_threads(),
        read_bytes_per_s=read_bytes_per_s(device),
        load_avg_1m=os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    )
    for m, k, n in gemm_shapes:
        p.flops_per_s(m, k, n)
    return p

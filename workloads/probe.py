"""What this machine can move: read bandwidth probed at a ladder of working-set sizes, GEMM FLOP/s, and the
floor time of a workload: floor_s = max(bytes / read bandwidth at its working set, FLOPs / GEMM FLOP/s).
Details: docs/workloads.md#workloadsprobe."""

import os
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

# The working-set ladder, 512 KiB to 256 MiB (×2): inside L2, through the last-level cache, to sizes read
# from DRAM/HBM. Bandwidth falls as a working set spills out of each cache, so the rate at the largest
# size <= W is at least what a W-byte working set can get: the floor stays a lower bound on the time.
READ_PROBE_SIZES = tuple(2**k for k in range(19, 29))
READ_PROBE_BYTES = READ_PROBE_SIZES[-1]  # the largest: the DRAM/HBM rate, `read_bytes_per_s`
# A small buffer is read this many times over in one op (a stride-0 expand), so per-op overhead does not
# hide the cache's rate: each timed call reads at least this many bytes.
READ_PROBE_MIN_CALL_BYTES = 64 * 2**20


def _median_s(fn, device: torch.device, repeats: int) -> float:
    fn()  # warm-up: first-touch page faults, kernel selection, the buffer brought into cache
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
    """Bytes/s of a streaming fp32 reduction over a working set of `nbytes` (median of `repeats`); a buffer
    under READ_PROBE_MIN_CALL_BYTES is summed several times over in one op (its rows a stride-0 view)."""
    device = torch.device(device)
    x = torch.ones(nbytes // 4, dtype=torch.float32, device=device)
    times = max(1, READ_PROBE_MIN_CALL_BYTES // (x.numel() * 4))
    view = x if times == 1 else x.expand(times, -1)  # (times, n): the same n floats read `times` times
    return view.numel() * 4 / _median_s(view.sum, device, repeats)


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
    """One probe of the machine, taken at benchmark or job start. `read_bytes_per_s` is the rate beyond
    the caches (the ladder's largest size); `read_by_size` maps working-set bytes -> bytes/s (empty: that
    one rate for every working set); `gemm` keys are "m×k×n"."""

    device: str
    threads: int
    read_bytes_per_s: float
    gemm_flop_per_s: dict[str, float] = field(default_factory=dict)
    load_avg_1m: float | None = None
    read_by_size: dict[int, float] = field(default_factory=dict)

    def read_rate(self, working_set_bytes: float) -> float:
        """Read bytes/s for a working set of `working_set_bytes` (the module doc's rule)."""
        if not self.read_by_size:
            return self.read_bytes_per_s
        sizes = sorted(self.read_by_size)
        at = max((s for s in sizes if s <= working_set_bytes), default=sizes[0])
        return max(self.read_by_size[s] for s in sizes if s >= at)

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

    def floor_s(
        self,
        nbytes: float,
        flops: float,
        flop_per_s: float | None = None,
        working_set_bytes: float | None = None,
    ) -> float:
        """The least time `nbytes` of reads and `flops` can take here (the roofline's max); the bandwidth is
        the one for `working_set_bytes` (default: `nbytes`, the bytes of the call itself)."""
        rate = self.read_rate(nbytes if working_set_bytes is None else working_set_bytes)
        return max(nbytes / rate, flops / (flop_per_s or self.peak_flops_per_s()))

    def as_dict(self) -> dict:
        return asdict(self)


def probe(
    device: torch.device | str = "cpu",
    gemm_shapes: tuple[tuple[int, int, int], ...] = (),
    sizes: tuple[int, ...] = READ_PROBE_SIZES,
) -> MachineProbe:
    """Probe read bandwidth at each working-set size (and GEMM FLOP/s at `gemm_shapes`) at torch's
    current thread count."""
    device = torch.device(device)
    by_size = {int(s): read_bytes_per_s(device, int(s)) for s in sizes}
    p = MachineProbe(
        device=str(device),
        threads=torch.get_num_threads(),
        read_bytes_per_s=by_size[max(by_size)],
        load_avg_1m=os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        read_by_size=by_size,
    )
    for m, k, n in gemm_shapes:
        p.flops_per_s(m, k, n)
    return p

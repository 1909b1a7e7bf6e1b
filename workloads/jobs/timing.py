"""One timing helper for jobs and kernel benchmarks: device-synchronized, warm-up excluded, median/spread.

On CUDA the timed region is bracketed by CUDA events (read once, at `summary()`), so no host sync or
`.item()` happens inside the loop; on CPU wall-clock `perf_counter` around the region is exact enough.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch


def synchronize(device: torch.device | str) -> None:
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class TimingStats:
    """Seconds per timed region over the kept (post-warm-up) samples."""

    median_s: float
    p10_s: float
    p90_s: float
    mean_s: float
    n: int

    @classmethod
    def of(cls, samples_s) -> "TimingStats":
        a = np.asarray(samples_s, dtype=np.float64)
        if a.size == 0:
            raise ValueError("no timed samples left after warm-up")
        p10, med, p90 = np.percentile(a, [10, 50, 90])
        return cls(float(med), float(p10), float(p90), float(a.mean()), int(a.size))


class StepTimer:
    """Time repeated regions (training steps, decode steps); the first `warmup` are dropped.

    timer = StepTimer(device, warmup=2)
    for ...:
        with timer:
            step()
    stats = timer.summary()
    """

    def __init__(self, device: torch.device | str, warmup: int = 0):
        if warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {warmup}")
        self.device, self.warmup = torch.device(device), warmup
        self._cuda = self.device.type == "cuda"
        self._events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
        self._wall: list[float] = []
        self._t0 = 0.0
        self._start_event = None

    def __enter__(self) -> "StepTimer":
        if self._cuda:
            self._start_event = torch.cuda.Event(enable_timing=True)
            self._start_event.record()
        else:
            self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        if self._cuda:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            self._events.append((self._start_event, end))
        else:
            self._wall.append(time.perf_counter() - self._t0)

    @property
    def count(self) -> int:
        return len(self._events) if self._cuda else len(self._wall)

    def samples_s(self) -> list[float]:
        """All samples, warm-up included (syncs the device once on CUDA)."""
        if self._cuda:
            synchronize(self.device)
            return [a.elapsed_time(b) / 1e3 for a, b in self._events]
        return list(self._wall)

    def summary(self) -> TimingStats:
        return TimingStats.of(self.samples_s()[self.warmup :])


def benchmark(
    fn: Callable[[], object], device: torch.device | str = "cpu", *, warmup: int = 2, repeats: int = 10
) -> TimingStats:
    """Median/p10/p90 seconds of `fn()` over `repeats` runs after `warmup` untimed ones."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for _ in range(warmup):
        fn()
    synchronize(device)
    timer = StepTimer(device)
    for _ in range(repeats):
        with timer:
            fn()
    return timer.summary()

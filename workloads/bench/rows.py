"""A benchmark row: one timed call with its median/p10/p90, the bytes and FLOPs it must move, and the
roofline floor of those on the probed machine; and the interleaved-rounds timer every section uses.
Details: docs/workloads.md#workloadsbenchrows."""

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import torch

from workloads.jobs.timing import TimingStats
from workloads.probe import MachineProbe

# Goal cells of rows no issue sets a goal for (met stays None): the row other rows are divided by, a
# variant shown beside the goal rows, or a number reported for its own sake.
BASELINE, COMPARISON, REPORTED = "none: baseline", "none: comparison", "none: reported"
NO_GOAL = (BASELINE, COMPARISON, REPORTED)


@dataclass(frozen=True)
class BenchContext:
    """What every section gets: the machine's probe (taken at this thread count), the device, how many
    interleaved rounds to time, and `quick` (the smallest sizes that still mean something: tests, CI)."""

    probe: MachineProbe
    device: torch.device
    rounds: int = 7
    quick: bool = False

    @property
    def threads(self) -> int:
        return self.probe.threads


@dataclass(frozen=True)
class Row:
    """One timed variant. `items` per call in `unit` (e.g. tokens) gives the rate column; `goal` is a
    short condition (e.g. "≥0.9× dense") and `met` whether the measurement satisfies it (None: no goal).
    `value` is the number the goal is about when it is not the time itself (a ratio), printed beside it;
    `value_p10`/`value_p90` its spread when it is a median over rounds (a per-round ratio). `no_floor`
    says why a row has no physical floor (a latency: process start, Ray dispatch), instead of bytes."""

    section: str
    name: str
    median_s: float
    p10_s: float
    p90_s: float
    bytes: float | None = None
    flops: float | None = None
    floor_s: float | None = None
    items: float | None = None
    unit: str = "tok"
    value: float | None = None
    goal: str = ""
    met: bool | None = None
    note: str = ""
    value_p10: float | None = None
    value_p90: float | None = None
    no_floor: str = ""

    @property
    def gb_per_s(self) -> float | None:
        return None if self.bytes is None else self.bytes / self.median_s / 1e9

    @property
    def gflop_per_s(self) -> float | None:
        return None if self.flops is None else self.flops / self.median_s / 1e9

    @property
    def floor_frac(self) -> float | None:
        """floor_s / median_s: the fraction of the hardware's speed this call reached."""
        return None if self.floor_s is None else self.floor_s / self.median_s

    @property
    def items_per_s(self) -> float | None:
        return None if self.items is None else self.items / self.median_s

    def with_goal(self, goal: str, met: bool, value: float | None = None) -> "Row":
        return replace(self, goal=goal, met=met, value=self.value if value is None else value)

    def without_goal(self, why: str) -> "Row":
        """The row with one of the `NO_GOAL` cells (ValueError for any other text)."""
        if why not in NO_GOAL:
            raise ValueError(f"{self.section}/{self.name}: a row without a goal says {NO_GOAL}, got {why!r}")
        return replace(self, goal=why, met=None)

    def as_dict(self) -> dict:
        derived = {"gb_per_s": self.gb_per_s, "gflop_per_s": self.gflop_per_s, "floor_frac": self.floor_frac}
        return asdict(self) | derived | {"items_per_s": self.items_per_s}


def timed_row(
    section: str,
    name: str,
    samples_s: list[float],
    probe: MachineProbe | None = None,
    *,
    nbytes: float | None = None,
    flops: float | None = None,
    gemm: tuple[int, int, int] | None = None,
    working_set: float | None = None,
    **kw,
) -> Row:
    """A row from per-call seconds; floor from the probe (FLOPs at the probed GEMM rate of `gemm`'s
    m×k×n shape when given, else the best rate probed; bytes at the read rate of `working_set`, the bytes
    the repeated calls keep touching, by default `nbytes`: `MachineProbe.read_rate`)."""
    if not samples_s:
        raise ValueError(f"{section}/{name}: no timing samples")
    t = TimingStats.of(samples_s)
    floor = None
    if probe is not None and (nbytes is not None or flops is not None):
        rate = probe.flops_per_s(*gemm) if gemm is not None and flops else None
        floor = probe.floor_s(nbytes or 0.0, flops or 0.0, rate, working_set)
    return Row(section, name, t.median_s, t.p10_s, t.p90_s, nbytes, flops, floor, **kw)


def gaps(row: Row) -> list[str]:
    """What `row` lacks of the table's rule: "bytes", "FLOPs", "floor" (unless `no_floor` says why it has
    none), "goal", "met" (unless its goal is one of `NO_GOAL`). Empty: the row is complete."""
    missing = []
    if not row.no_floor:
        fields = (("bytes", row.bytes), ("FLOPs", row.flops), ("floor", row.floor_s))
        missing += [name for name, value in fields if value is None]
    if not row.goal:
        missing.append("goal")
    elif row.met is None and row.goal not in NO_GOAL:
        missing.append("met")
    return missing


def interleaved(
    fns: dict[str, Callable[[], object]], rounds: int, inner: int = 1, warmup: int = 1, sync=None
) -> dict[str, list[float]]:
    """Seconds per call of each fn: one sample per round (the mean of `inner` calls), the fns taking turns
    within every round so a load change on a shared machine hits each alike. `sync` (e.g. a CUDA
    synchronize) runs before and after each timed block. Warm-up calls are not timed."""
    if rounds < 1 or inner < 1:
        raise ValueError(f"interleaved needs rounds >= 1 and inner >= 1, got {rounds}, {inner}")
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            if sync is not None:
                sync()
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            if sync is not None:
                sync()
            samples[name].append((time.perf_counter() - t0) / inner)
    return samples


def ratio_goal(row: Row, baseline: Row, at_least: float, label: str) -> Row:
    """`row` with the goal "speed ≥ at_least × baseline's" (speed = 1 / median time) and its ratio."""
    ratio = baseline.median_s / row.median_s
    return row.with_goal(f"≥{at_least:g}× {label}", ratio >= at_least, ratio)

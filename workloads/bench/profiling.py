"""Where a step's time goes: torch.profiler events split into parts (model modules, the optimizer, each
part's backward) and ops, per step; the tables `python -m workloads.bench.profile` prints.
Details: docs/workloads.md#workloadsbenchprofiling."""

import contextlib
import os
import sys
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field

import torch
from rich import box
from rich.table import Table

ROOT, PART = "root:step", "part:"
NO_OP = "(no torch op)"
BACKWARD = "autograd::engine::evaluate_function: "
TORCH_RANGES = {"Optimizer.step#": "optimizer", "Optimizer.zero_grad#": "zero_grad"}


@dataclass(frozen=True)
class Event:
    """One profiler event: name, thread, start and end (µs), self time (µs), autograd sequence number."""

    name: str
    thread: int
    start: float
    end: float
    self_us: float
    seq: int = -1


@dataclass
class Profile:
    """Per step (µs): `total`, `parts` {part: self time in it} and `ops` {op name: self time}."""

    steps: int
    total: float
    parts: dict[str, float] = field(default_factory=dict)
    ops: dict[str, float] = field(default_factory=dict)


def events_of(prof: torch.profiler.profile) -> list[Event]:
    return [
        Event(e.name, e.thread, e.time_range.start, e.time_range.end, e.self_cpu_time_total, e.sequence_nr)
        for e in prof.events()
    ]


def _own_part(name: str) -> str | None:
    if name.startswith(PART):
        return name[len(PART) :]
    return next((part for prefix, part in TORCH_RANGES.items() if name.startswith(prefix)), None)


def aggregate(events: list[Event], root: str = ROOT) -> Profile:
    """The module doc's rule over `events` (any order, any threads): per-step parts and ops."""
    steps, total = 0, 0.0
    parts: dict[str, float] = defaultdict(float)
    ops: dict[str, float] = defaultdict(float)
    fwd_part: dict[int, str] = {}  # autograd sequence number -> the part of the forward op that made it
    pending: list[tuple[Event, int]] = []  # events under a backward node, with the node's sequence number
    by_thread: dict[int, list[Event]] = defaultdict(list)
    for e in events:
        by_thread[e.thread].append(e)
    for thread_events in by_thread.values():
        stack: list[tuple[float, str | None, bool, int | None]] = []  # (end, part, in root, bwd seq)
        for e in sorted(thread_events, key=lambda e: (e.start, -e.end)):
            while stack and stack[-1][0] <= e.start:
                stack.pop()
            end, part, in_root, bwd = stack[-1] if stack else (0.0, None, False, None)
            part = _own_part(e.name) or part
            if e.name.startswith(BACKWARD):
                bwd = e.seq
            in_root = in_root or e.name == root
            stack.append((e.end, part, in_root, bwd))
            if e.name == root:
                steps, total = steps + 1, total + e.end - e.start
            if not in_root:
                continue
            if bwd is None and e.seq >= 0 and part is not None:
                fwd_part.setdefault(e.seq, part)
            is_range = e.name == root or _own_part(e.name) is not None or e.name.startswith(BACKWARD)
            ops[NO_OP if is_range else e.name] += e.self_us
            if bwd is None:
                parts[part or "other"] += e.self_us
            else:
                pending.append((e, bwd))
    for e, seq in pending:
        parts[f"backward {fwd_part.get(seq, 'other')}"] += e.self_us
    n = max(steps, 1)
    return Profile(steps, total / n, {k: v / n for k, v in parts.items()}, {k: v / n for k, v in ops.items()})


@contextlib.contextmanager
def part_ranges(modules: list[tuple[str, torch.nn.Module]]):
    """Open a "part:<part>" range around every forward of each (part, module) (hooks, removed on exit)."""
    handles = []
    for part, module in modules:
        open_ranges: list = []

        def enter(_m, _args, part=part, open_ranges=open_ranges):
            rf = torch.profiler.record_function(PART + part)
            rf.__enter__()
            open_ranges.append(rf)

        def leave(_m, _args, _out, open_ranges=open_ranges):
            open_ranges.pop().__exit__(None, None, None)

        handles += [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def function_range(owner, attr: str, part: str):
    """Replace `owner.attr` (a function looked up at call time) by one that runs in a "part:<part>" range."""
    original, own = getattr(owner, attr), attr in vars(owner)  # a bound method is not `owner`'s own

    def wrapped(*args, **kwargs):
        with torch.profiler.record_function(PART + part):
            return original(*args, **kwargs)

    setattr(owner, attr, wrapped)
    try:
        yield
    finally:
        if own:
            setattr(owner, attr, original)
        else:
            delattr(owner, attr)


def profile_steps(step, n: int) -> Profile:
    """`step()` run `n` times under torch.profiler (CPU), each in a ROOT range, aggregated."""
    cpu = [torch.profiler.ProfilerActivity.CPU]
    with without_kineto_notices(), torch.profiler.profile(activities=cpu) as prof:
        for _ in range(n):
            with torch.profiler.record_function(ROOT):
                step()
    return aggregate(events_of(prof))


@contextlib.contextmanager
def without_kineto_notices(prefix: bytes = b"USDT:"):
    """Drop the lines kineto writes to file descriptor 2 at every profiler start and stop ("USDT:...
    profiler_start"; no setting turns them off): fd 2 goes to a temporary file meanwhile, and every other
    line written there (a warning of the profiled step) is passed on to stderr afterwards."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            kept = [line for line in caught.read().splitlines(keepends=True) if not line.startswith(prefix)]
            if kept:
                os.write(2, b"".join(kept))


def parts_table(profiles: dict[str, Profile]) -> Table:
    """Part | per variant µs/step and % of its step | each later variant − the first (µs/step), the parts
    with the largest difference first; the last line is the whole step."""
    names = list(profiles)
    first = profiles[names[0]]
    t = Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1))
    t.add_column("part", max_width=28, no_wrap=True)
    for v in names:
        t.add_column(f"{v} µs", justify="right")
        t.add_column("%", justify="right")
    for v in names[1:]:
        t.add_column(f"{v} − {names[0]}", justify="right")
    keys = {k for p in profiles.values() for k in p.parts}

    def diffs(k: str | None) -> list[float]:
        pick = (lambda p: p.total) if k is None else (lambda p: p.parts.get(k, 0.0))
        return [pick(profiles[v]) - pick(first) for v in names[1:]]

    for k in sorted(keys, key=lambda k: (-max(map(abs, diffs(k)), default=0.0), -first.parts.get(k, 0.0))):
        cells = [c for v in names for c in _cell(profiles[v].parts.get(k), profiles[v].total)]
        t.add_row(k, *cells, *(f"{d:+,.0f}" for d in diffs(k)))
    total = [c for v in names for c in (f"{profiles[v].total:,.0f}", "100")]
    t.add_row("[bold]step[/bold]", *total, *(f"{d:+,.0f}" for d in diffs(None)))
    return t


def ops_table(profiles: dict[str, Profile], top: int = 10) -> Table:
    """The `top` ops by self time in the last variant, with each variant's µs/step and share."""
    names = list(profiles)
    last = profiles[names[-1]]
    t = Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1))
    t.add_column(f"top ops by self time ({names[-1]})", max_width=48, no_wrap=True)
    for v in names:
        t.add_column(f"{v} µs", justify="right")
        t.add_column("%", justify="right")
    for op in sorted(last.ops, key=lambda k: -last.ops[k])[:top]:
        t.add_row(op, *[c for v in names for c in _cell(profiles[v].ops.get(op), profiles[v].total)])
    return t


def _cell(us: float | None, total: float) -> tuple[str, str]:
    return ("", "") if us is None else (f"{us:,.0f}", f"{100 * us / total:.0f}" if total else "")

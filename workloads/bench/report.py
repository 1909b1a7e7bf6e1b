"""The benchmark's one table format (rich) and its JSON file: a header with device, torch threads, load
average and the probe, then one row per timed variant with bytes, FLOPs, achieved rates, % of floor,
goal and whether it is met. A row without a floor says "n/a" there and why below the table; one without a
goal says so in the goal cell (`rows.NO_GOAL`) and "-" under met; rows that break the rule are listed."""

import json
import os
from pathlib import Path

from rich import box
from rich.console import Console
from rich.table import Table

from workloads.bench.rows import Row, gaps
from workloads.probe import MachineProbe

COLUMNS = ("row", "µs", "p10/p90", "tok/s", "MB", "MFLOP", "GB/s", "GF/s", "floor", "goal", "met")


def si(value: float | None) -> str:
    """3 significant digits with a k/M/G/T suffix: 1234 -> "1.23k"; None -> ""."""
    if value is None:
        return ""
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def _spread(r: Row) -> str:
    """p10 and p90 as % off the median: "-3/+8"."""
    return f"{100 * (r.p10_s / r.median_s - 1):+.0f}/{100 * (r.p90_s / r.median_s - 1):+.0f}"


def _mib(nbytes: int) -> str:
    return f"{nbytes / 2**20:g}M"


def header(probe: MachineProbe, load_before: float, load_after: float) -> str:
    """Device, threads, load, the GEMM peak and, on a second line, the read bandwidth per working-set size
    (a row's floor reads at the rate of its working set: `MachineProbe.read_rate`)."""
    peak = max(probe.gemm_flop_per_s.values()) if probe.gemm_flop_per_s else None
    gemm = "" if peak is None else f", GEMM ≤{peak / 1e9:,.1f} GFLOP/s"
    ladder = " · ".join(f"{_mib(s)} {r / 1e9:.0f}" for s, r in sorted(probe.read_by_size.items()))
    return (
        f"{probe.device}, torch threads {probe.threads}, {os.cpu_count()} cores, load avg (1 min) "
        f"{load_before:.2f} → {load_after:.2f}; probed read {probe.read_bytes_per_s / 1e9:.1f} GB/s{gemm}"
        + (f"\nread GB/s by working set: {ladder}" if ladder else "")
    )


def table(rows: list[Row], title: str) -> Table:
    """Per row: median µs per call, p10/p90 as % off it, rate per second (tokens unless the unit says),
    MB and MFLOP per call, achieved GB/s and GFLOP/s, floor = floor_s / median (100% = the hardware's
    limit), goal with the measured value, met or NOT. Each section opens with its name."""
    t = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1))
    for col in COLUMNS:
        t.add_column(
            col,
            justify="left" if col in ("row", "goal") else "right",
            no_wrap=col != "goal",
            min_width={"goal": 20, "met": 3}.get(col),
        )
    section = None
    for r in rows:
        if r.section != section:
            if section is not None:
                t.add_section()
            t.add_row(f"[bold]{r.section}[/bold]")
        section = r.section
        goal = r.goal if r.value is None else f"{r.goal} ({r.value:.2f})"
        met = "-" if r.met is None else ("met" if r.met else "NOT")
        floor = "n/a" if r.no_floor else "" if r.floor_frac is None else f"{100 * r.floor_frac:.0f}%"
        rate = "" if r.items_per_s is None else si(r.items_per_s) + ("" if r.unit == "tok" else f" {r.unit}")
        t.add_row(
            f" {r.name}",
            si(r.median_s * 1e6),
            _spread(r),
            rate,
            si(None if r.bytes is None else r.bytes / 1e6),
            si(None if r.flops is None else r.flops / 1e6),
            si(r.gb_per_s),
            si(r.gflop_per_s),
            floor,
            goal,
            met,
        )
    return t


def footer(wall_s: dict[str, float]) -> str:
    """Each section's wall time (the probe's first) and their total: "probe 1 s · train 40 s; 41 s"."""
    parts = " · ".join(f"{name} {seconds:.0f} s" for name, seconds in wall_s.items())
    return f"wall time: {parts}; {sum(wall_s.values()):.0f} s at this thread count"


def print_run(
    console: Console,
    rows: list[Row],
    probe: MachineProbe,
    loads: tuple[float, float],
    wall_s: dict[str, float] | None = None,
) -> None:
    console.print(table(rows, header(probe, *loads)))
    for r in rows:
        if r.note:
            console.print(f"  {r.section}/{r.name}: {r.note}", highlight=False)
        if r.no_floor:
            console.print(f"  {r.section}/{r.name}: floor n/a: {r.no_floor}", highlight=False)
    broken = [f"{r.section}/{r.name} ({', '.join(gaps(r))})" for r in rows if gaps(r)]
    if broken:
        console.print(f"rows without bytes/FLOPs/floor or goal/met: {'; '.join(broken)}", highlight=False)
    if wall_s:
        console.print(footer(wall_s), highlight=False)


def write_json(path: Path, record: dict) -> Path:
    """One file per invocation: {"command", "runs": [{"probe", "threads", "load_avg", "rows"}]}."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1, default=float))
    return path

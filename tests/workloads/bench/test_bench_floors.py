"""workloads.bench's table rule: every row has bytes, FLOPs and a floor (or says why it has none), a goal
and met (or says it has none); hand-computed bytes/FLOPs of the rows that lacked them."""

import numpy as np
import pytest
import torch
from rich.console import Console

from workloads.bench import lzw, orchestration, report
from workloads.bench.rows import BASELINE, COMPARISON, REPORTED, BenchContext, Row, gaps, timed_row
from workloads.l3.allocation import PhraseCounts
from workloads.probe import MachineProbe


def _probe() -> MachineProbe:
    return MachineProbe(device="cpu", threads=1, read_bytes_per_s=2e9, gemm_flop_per_s={"8x8x8": 4e9})


def _ctx() -> BenchContext:
    return BenchContext(_probe(), torch.device("cpu"), rounds=1, quick=True)


def test_gaps_names_what_a_row_lacks():
    full = timed_row("s", "a", [1.0], _probe(), nbytes=1e9, flops=0.0).with_goal("≥1×", True)
    assert gaps(full) == []
    assert gaps(timed_row("s", "b", [1.0], _probe(), nbytes=1e9)) == ["FLOPs", "goal"]
    assert gaps(timed_row("s", "c", [1.0])) == ["bytes", "FLOPs", "floor", "goal"]
    assert gaps(Row("s", "d", 1, 1, 1, no_floor="a latency", goal="≤1 s")) == ["met"]
    for why in (BASELINE, COMPARISON, REPORTED):
        assert gaps(Row("s", "e", 1, 1, 1, no_floor="a latency").without_goal(why)) == []
    with pytest.raises(ValueError, match="s/f: a row without a goal says"):
        Row("s", "f", 1, 1, 1).without_goal("÷ dense")


def test_table_says_floor_na_and_why_and_lists_rows_that_break_the_rule():
    rows = [Row("o", "cold", 2.0, 2.0, 2.0, no_floor="a latency (Ray start)").without_goal(REPORTED),
            timed_row("o", "bare", [1.0], _probe(), nbytes=2e9)]  # fmt: skip
    console = Console(width=160, record=True)
    report.print_run(console, rows, _probe(), (0.5, 0.5))
    text = console.export_text()
    assert "n/a" in text and "o/cold: floor n/a: a latency (Ray start)" in text
    assert "reported (no goal set)" in text
    assert "rows without bytes/FLOPs/floor or goal/met: o/bare (FLOPs, goal)" in text


def test_orchestration_rows_are_latencies_with_the_compare_goal():
    m = {"cold_s": 9.0, "ray_init_s": 4.0, "per_job_s": 0.3, "report_s": 2.0, "compare_s": 1.6,
         "compare_cli_s": 3.4, "python_s": 2.0}  # fmt: skip
    rows = {r.name: r for r in orchestration.rows_from(m, 5)}
    assert list(rows) == ["cold start (1 job)", "per job (5 warm)", "report (5 jobs)", "compare in-process",
                          "compare CLI process"]  # fmt: skip
    assert all(gaps(r) == [] and r.no_floor.startswith("a latency (") for r in rows.values())
    inproc, cli = rows["compare in-process"], rows["compare CLI process"]
    assert (inproc.goal, inproc.met, inproc.value) == ("≤1.5 s", False, 1.6)
    assert (cli.goal, cli.met, cli.value) == ("≤1.5 s + python start", True, pytest.approx(1.4))
    assert rows["cold start (1 job)"].met is None and rows["cold start (1 job)"].goal == REPORTED


def test_lzw_stage2_bytes_read_counts_and_last_tokens_and_write_rows():
    """V = 3 tokens, 5 phrases: 5 counts + 5 last tokens read (8 B each), 3 rows written: 104 B."""
    phrases = PhraseCounts(3, np.array([0, 1, 2, 1, 0]), np.array([-1, -1, -1, 0, 3]),
                           np.array([4, 3, 2, 2, 1]), n_tokens=9, n_sequences=1, fingerprint="x")  # fmt: skip
    assert lzw.stage2_bytes(phrases) == 5 * 8 + 5 * 8 + 3 * 8


def test_lzw_rows_keep_the_rule():
    rows = {r.name: r for r in lzw.rows(_ctx())}
    assert all(gaps(r) == [] for r in rows.values()), {n: gaps(r) for n, r in rows.items()}
    stage2 = rows["stage 2 allocate"]
    assert stage2.flops == 0.0 and stage2.floor_s == pytest.approx(stage2.bytes / 2e9)
    assert stage2.goal == REPORTED and rows["lzw-paper stage 1 (lines)"].goal == COMPARISON

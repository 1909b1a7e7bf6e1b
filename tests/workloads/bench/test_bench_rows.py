"""workloads.bench: rows (percentiles, floor, rates, goals), interleaved rounds, the table and the entry."""

import json
import sys
import types

import pytest
from rich.console import Console

import workloads.bench.__main__ as entry
from workloads.bench import report, sections
from workloads.bench.rows import BenchContext, Row, interleaved, ratio_goal, timed_row
from workloads.probe import MachineProbe


def _probe() -> MachineProbe:
    return MachineProbe(device="cpu", threads=1, read_bytes_per_s=2e9, gemm_flop_per_s={"8x8x8": 4e9})


def test_timed_row_percentiles_floor_and_rates_from_closed_forms():
    samples = [float(s) for s in range(1, 12)]  # 1..11 s: median 6, p10 2, p90 10 (numpy's linear rule)
    row = timed_row("s", "v", samples, _probe(), nbytes=6e9, flops=8e9, items=12.0)
    assert (row.median_s, row.p10_s, row.p90_s) == (6.0, 2.0, 10.0)
    assert row.floor_s == pytest.approx(3.0)  # max(6 GB / 2 GB/s, 8 GFLOP / 4 GFLOP/s)
    assert row.floor_frac == pytest.approx(0.5)
    assert row.gb_per_s == pytest.approx(1.0) and row.gflop_per_s == pytest.approx(8 / 6)
    assert row.items_per_s == pytest.approx(2.0)
    compute_bound = timed_row("s", "v", [1.0], _probe(), nbytes=1.0, flops=12e9)
    assert compute_bound.floor_s == pytest.approx(3.0)
    assert timed_row("s", "v", [1.0]).floor_s is None  # nothing moved: no floor
    with pytest.raises(ValueError, match="s/v: no timing samples"):
        timed_row("s", "v", [])


def test_ratio_goal_compares_speeds_and_says_when_it_is_missed():
    base = Row("s", "dense", 1.0, 1.0, 1.0)
    fast, slow = Row("s", "a", 1.05, 1, 1), Row("s", "b", 1.25, 1, 1)
    assert ratio_goal(fast, base, 0.9, "dense").met is True
    missed = ratio_goal(slow, base, 0.9, "dense")
    assert (missed.met, missed.goal, missed.value) == (False, "≥0.9× dense", pytest.approx(0.8))


def test_interleaved_alternates_variants_every_round_after_warmup():
    calls = []
    fns = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    samples = interleaved(fns, rounds=3, inner=2, warmup=1)
    assert calls == ["a", "b"] + ["a", "a", "b", "b"] * 3
    assert {k: len(v) for k, v in samples.items()} == {"a": 3, "b": 3}
    with pytest.raises(ValueError, match="rounds >= 1"):
        interleaved(fns, rounds=0)


def test_si_and_table_show_every_column_and_goal():
    assert [report.si(v) for v in (None, 0.5, 1234, 5.6e6, 7e9)] == ["", "0.5", "1.23k", "5.6M", "7G"]
    row = timed_row("infer", "moe bs1", [2e-3], _probe(), nbytes=2e6, flops=4e6, items=1.0)
    row = row.with_goal("≥0.9× dense", False, 0.55)
    console = Console(width=110, record=True)
    report.print_run(console, [row], _probe(), (0.5, 1.5))
    text = console.export_text()
    for cell in ("torch threads 1", "0.50 → 1.50", "2.0 GB/s", "infer", "moe bs1", "2k", "500", "2", "4",
                 "1", "50%", "≥0.9× dense (0.55)", "NOT"):  # fmt: skip
        assert cell in text, cell


def test_header_lists_the_read_ladder_and_footer_the_section_times():
    p = MachineProbe(device="cpu", threads=2, read_bytes_per_s=20e9, read_by_size={2**19: 150e9, 2**28: 20e9})
    assert "\nread GB/s by working set: 0.5M 150 · 256M 20" in report.header(p, 0.5, 1.0)
    assert report.footer({"probe": 1.2, "train": 40.4, "infer": 99.6}) == (
        "wall time: probe 1 s · train 40 s · infer 100 s; 141 s at this thread count"
    )


def test_unknown_section_is_named():
    with pytest.raises(ValueError, match="unknown benchmark section 'lzww'; known: layer"):
        sections.resolve("lzww")


def test_entry_runs_each_thread_count_and_writes_one_json(tmp_path, monkeypatch):
    seen = []

    def fake_rows(ctx: BenchContext) -> list[Row]:
        seen.append((ctx.threads, ctx.quick, ctx.rounds))
        return [timed_row("fake", "x", [1e-3, 2e-3, 3e-3], ctx.probe, nbytes=1e6)]

    monkeypatch.setitem(sys.modules, "fake_section", types.SimpleNamespace(rows=fake_rows))
    monkeypatch.setitem(sections.SECTIONS, "fake", "fake_section:rows")
    monkeypatch.setattr(entry, "probe", lambda device: _probe_at())
    out = tmp_path / "b.json"
    entry.main(["fake", "--threads", "1", "2", "--rounds", "3", "--quick", "--out", str(out)])
    assert seen == [(1, True, 3), (2, True, 3)]
    record = json.loads(out.read_text())
    assert [run["threads"] for run in record["runs"]] == [1, 2]
    assert record["runs"][1]["probe"]["threads"] == 2
    (row,) = record["runs"][0]["rows"]
    assert row["median_s"] == pytest.approx(2e-3) and row["floor_s"] == pytest.approx(5e-4)
    assert row["floor_frac"] == pytest.approx(0.25)
    assert list(record["runs"][0]["wall_s"]) == ["probe", "fake"]  # each section's wall time
    with pytest.raises(SystemExit):
        entry.main(["fake", "--threads", "0"])


def _probe_at() -> MachineProbe:
    import torch

    return MachineProbe(device="cpu", threads=torch.get_num_threads(), read_bytes_per_s=2e9)

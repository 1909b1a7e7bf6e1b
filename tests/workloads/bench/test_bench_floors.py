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
    (cold,) = [line.split() for line in text.splitlines() if line.strip().startswith("cold")]
    assert cold[-4:] == ["n/a", "none:", "reported", "-"], cold
    assert "o/cold: floor n/a: a latency (Ray start)" in text
    assert "rows without bytes/FLOPs/floor or goal/met: o/bare (FLOPs, goal)" in text


def test_orchestration_rows_are_latencies_with_the_compare_goal():
    m = {"cold_s": 9.0, "ray_init_s": 4.0, "per_job_s": 0.3, "report_s": 2.0, "compare_s": 1.6,
         "compare_cli_s": 3.4, "compare_cli_cpu_s": 1.1, "python_s": 2.0}  # fmt: skip
    rows = {r.name: r for r in orchestration.rows_from(m, 5)}
    assert list(rows) == ["cold start (1 job)", "per job (5 warm)", "report (5 jobs)", "compare in-process",
                          "compare CLI process"]  # fmt: skip
    assert all(gaps(r) == [] and r.no_floor.startswith("a latency (") for r in rows.values())
    inproc, cli = rows["compare in-process"], rows["compare CLI process"]
    assert (inproc.goal, inproc.met, inproc.value) == ("≤1.5 s", False, 1.6)
    assert (cli.goal, cli.met, cli.value) == ("≤1.5 s + python start", True, pytest.approx(1.4))
    assert cli.note == "python -c pass 2.00 s of it; CPU 1.10 s (user+sys)"
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


def test_train_goals_dense_baseline_l3_ratio_moe_for_comparison():
    from workloads.bench import train

    def row(f: str, s: float) -> Row:
        return Row("train", f"step {f}", s, s, s, bytes=1.0, flops=1.0, floor_s=0.1)

    dense, l3, moe = train.with_goals(
        {"dense": row("dense", 2.0), "l3": row("l3", 2.5), "moe": row("moe", 4.0)}
    )
    assert (dense.goal, dense.met) == (BASELINE, None)
    assert (l3.goal, l3.met, l3.value) == ("≥0.95× dense", False, pytest.approx(0.8))
    assert (moe.goal, moe.met, moe.value) == (COMPARISON, None, pytest.approx(0.5))
    assert all(gaps(r) == [] for r in (dense, l3, moe))


def test_infer_decode_goals_by_label_and_batch():
    from workloads.bench.infer import decode_goal
    from workloads.jobs import rounds

    def row(name: str, floor: float) -> Row:
        return Row("infer", name, 1e-3, 1e-3, 1e-3, bytes=1.0, flops=1.0, floor_s=floor)

    m = {rounds.VS_DENSE: 0.96, rounds.VS_DENSE_P10: 0.9, rounds.VS_DENSE_P90: 1.0}
    dense = decode_goal(row("decode bs1 dense", 1e-4), "dense", 1, None, None)
    assert (dense.goal, dense.met) == (BASELINE, None)
    l3 = decode_goal(row("decode bs1 l3", 1e-4), "l3", 1, m, dense)
    assert (l3.goal, l3.met, l3.value) == ("≥0.95× dense", True, 0.96)
    assert "÷ dense p10–p90 0.900–1.000; floors' ratio 1.00" in l3.note
    moe = decode_goal(row("decode bs1 moe", 4e-4), "moe", 1, m, dense)  # a working set 4x dense's
    assert (moe.goal, moe.met, moe.value) == ("≥0.9× dense", True, 0.96)
    assert moe.note.endswith("floors' ratio 0.25")
    ds = decode_goal(row("decode bs1 moe-ds", 1e-4), "moe-ds", 1, m, dense)
    assert (ds.goal, ds.met, ds.value) == (COMPARISON, None, 0.96)
    l3_8 = decode_goal(row("decode bs8 l3", 2e-4), "l3", 8, m, dense)  # floor ratio 0.5: goal 0.475
    assert (l3_8.goal, l3_8.met) == ("≥0.95×0.50 (floors)", True)
    host = decode_goal(row("decode bs1 l3 host", 1e-4), "l3 host", 1, None, dense)
    assert (host.goal, host.met) == (COMPARISON, None)
    assert all(gaps(r) == [] for r in (dense, l3, moe, ds, l3_8, host))


def test_layer_rows_keep_the_rule_and_read_one_windows_rows_plus_the_dense_weights_per_call():
    from workloads.bench import layer

    rows = {r.name: r for r in layer.rows(_ctx())}
    assert all(gaps(r) == [] for r in rows.values()), {n: gaps(r) for n, r in rows.items()}
    data, counts = layer.l3_setup()
    width, dense = 256 + 128, 128 * 1024 + (1024 + 256) * 256 + 256 + 1024  # row; W_up, W_mix, 2 norms
    mean_rows = np.mean([counts[w.item()] for w in layer._windows(data, 1)])
    assert rows["l3 1 pos"].bytes == pytest.approx((mean_rows * width + dense) * 4)
    assert rows["l3 1 pos"].goal == "≤1.3× mlp time" and rows["mlp 1 pos"].goal == BASELINE
    assert rows["l3 8 pos"].goal == COMPARISON
    assert rows["l3 8 pos"].value == pytest.approx(rows["l3 8 pos"].median_s / rows["mlp 8 pos"].median_s)


def test_scone_rows_keep_the_rule():
    from workloads.bench import scone

    rows = {r.name: r for r in scone.rows(_ctx())}
    assert all(gaps(r) == [] for r in rows.values()), {n: gaps(r) for n, r in rows.items()}
    for name in ("discovery", "tagging"):  # int32 tokens read once, integer work
        assert rows[name].bytes == 4 * rows[name].items and rows[name].flops == 0.0
        assert rows[name].floor_s == pytest.approx(rows[name].bytes / 2e9)
    dense, f_host = rows["decode bs1 dense"], rows["decode bs1 F host"]
    assert dense.goal == BASELINE and f_host.goal == COMPARISON
    assert f_host.value == pytest.approx(dense.median_s / f_host.median_s)


@pytest.mark.slow
@pytest.mark.parametrize("section", ["train", "infer"])
def test_slow_sections_keep_the_rule(section):
    from workloads.bench.sections import resolve

    rows = resolve(section)(_ctx())
    assert rows and all(gaps(r) == [] for r in rows), {r.name: gaps(r) for r in rows if gaps(r)}


def test_moe_control_keeps_moes_outputs_and_its_working_set_is_its_distinct_weights():
    """The control (`alias_experts`) equals the MoE whose experts all hold expert 0's weights, and its
    working set is the bytes of the weights it really has (one expert per layer), counted from storage."""
    from dataclasses import replace

    from workloads.bench import infer as bench
    from workloads.jobs.infer import build
    from workloads.jobs.result import JobContext

    job = replace(bench.JOB, preset="debug", family="moe", batch_sizes=(2,), prompt_len=8, gen_len=4)
    moe, control = build(job, JobContext()), build(job, JobContext())
    bench.alias_experts(control.model)
    for block in moe.model.layers:  # the reference: every expert a copy of expert 0
        for expert in list(getattr(block.mlp, "experts", []))[1:]:
            expert.load_state_dict(block.mlp.experts[0].state_dict())
    with torch.no_grad():
        assert torch.equal(moe.model(moe.prompts)[0], control.model(control.prompts)[0])

    def weight_bytes(b) -> int:  # distinct storage, less the untied input embedding's unread rows
        stored = {p.data_ptr(): p.numel() * p.element_size() for p in b.model.parameters()}
        unread = 0 if b.model_cfg.tie_embeddings else (b.model_cfg.vocab_size - 2) * b.model_cfg.dim * 4
        return sum(stored.values()) - unread

    cfg = control.model_cfg
    kv = 2 * cfg.n_layers * 2 * 10 * cfg.n_kv_heads * cfg.head_dim * 4  # K and V, 2 sequences × 10 positions
    assert cfg.moe.num_experts > 1 and weight_bytes(control) < weight_bytes(moe)
    assert bench.decode_cost(moe, 2, 10.0)[2] == weight_bytes(moe) + kv
    assert bench.decode_cost(control, 2, 10.0, control=True)[2] == weight_bytes(control) + kv

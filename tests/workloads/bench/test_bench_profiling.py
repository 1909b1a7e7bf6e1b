"""workloads.bench.profiling: the split of profiler events into parts and ops, on hand-made events."""

import os

import pytest
import torch
from rich.console import Console

from workloads.bench import profiling
from workloads.bench.profiling import NO_OP, ROOT, Event, aggregate


def _events() -> list[Event]:
    """Two steps. Step 1 (thread 1, 0-100 µs, self times summing to 100): attention's mm (seq 7), the L3
    part with a nested numba part, a loss op in no part (seq 9), the backward of the mm and of the loss,
    an optimizer step. Step 2 (thread 2, 300-340): one op in no part. One mm outside any step."""
    e = Event
    return [
        e(ROOT, 1, 0, 100, 10),
        e("part:attention", 1, 10, 40, 5),
        e("aten::mm", 1, 12, 37, 25, seq=7),
        e("part:l3", 1, 40, 70, 4),
        e("part:l3 kernel", 1, 42, 60, 18),
        e("aten::empty", 1, 60, 68, 8, seq=8),
        e("aten::cross_entropy", 1, 70, 75, 5, seq=9),
        e("autograd::engine::evaluate_function: MmBackward0", 1, 75, 90, 2, seq=7),
        e("aten::mm", 1, 76, 89, 13),
        e("autograd::engine::evaluate_function: NllBackward0", 1, 90, 95, 5, seq=9),
        e("Optimizer.step#AdamW.step", 1, 95, 100, 5),
        e("aten::mm", 1, 200, 210, 10, seq=3),
        e(ROOT, 2, 300, 340, 10),
        e("aten::add", 2, 305, 335, 30),
    ][::-1]  # fmt: skip  (any order)


def test_aggregate_gives_each_self_time_to_its_innermost_part_and_backward_to_the_forward_part():
    p = aggregate(_events())
    assert (p.steps, p.total) == (2, 70.0)  # (100 + 40) / 2
    assert p.parts == {
        "attention": 15.0, "l3": 6.0, "l3 kernel": 9.0, "other": 27.5,  # other: roots 20, loss 5, add 30
        "backward attention": 7.5, "backward other": 2.5, "optimizer": 2.5,
    }  # fmt: skip
    assert sum(p.parts.values()) == pytest.approx(p.total)
    assert p.ops == {NO_OP: 29.5, "aten::mm": 19.0, "aten::empty": 4.0, "aten::cross_entropy": 2.5,
                     "aten::add": 15.0}  # fmt: skip


def test_aggregate_of_no_step_is_empty():
    p = aggregate([Event("aten::mm", 1, 0, 10, 10)])
    assert (p.steps, p.total, p.parts, p.ops) == (0, 0.0, {}, {})


def test_tables_put_the_largest_difference_first_and_the_step_last():
    a = profiling.Profile(1, 100.0, {"attention": 60.0, "other": 40.0}, {"aten::mm": 60.0, NO_OP: 40.0})
    b = profiling.Profile(1, 150.0, {"attention": 60.0, "l3": 70.0, "other": 20.0}, {"aten::mm": 150.0})
    console = Console(width=120, record=True)
    console.print(profiling.parts_table({"dense": a, "l3": b}))
    console.print(profiling.ops_table({"dense": a, "l3": b}))
    lines = [line.split() for line in console.export_text().splitlines() if line.strip()]
    body = [line for line in lines if line[0] in ("attention", "l3", "other", "step")]
    assert body[0] == ["l3", "70", "47", "+70"]
    assert body[1] == ["other", "40", "40", "20", "13", "-20"]
    assert body[3] == ["step", "100", "100", "150", "100", "+50"]
    assert ["aten::mm", "60", "60", "150", "100"] in lines


def test_part_ranges_and_function_range_mark_a_real_profile_and_undo_themselves():
    lin = torch.nn.Linear(4, 4)
    model = torch.nn.Sequential(lin, torch.nn.ReLU())
    owner = type("Owner", (), {"f": staticmethod(lambda x: x * 2)})
    with profiling.part_ranges([("lin", lin)]), profiling.function_range(owner, "f", "double"):
        p = profiling.profile_steps(lambda: owner.f(model(torch.ones(2, 4))), 3)
    assert p.steps == 3 and {"lin", "double"} <= set(p.parts)
    assert "aten::addmm" in p.ops or "aten::linear" in p.ops
    assert not lin._forward_pre_hooks and not lin._forward_hooks
    assert owner.f(3) == 6 and "f" in vars(owner)
    with profiling.function_range(lin, "extra_repr", "method"):  # a bound method: an instance attribute
        assert "extra_repr" in vars(lin)
    assert "extra_repr" not in vars(lin)  # the class's method shows through again


def test_kernel_stages_read_the_weights_and_rows_they_name_and_run():
    import numpy as np

    from workloads.bench import kernel_stages
    from workloads.bench.layer import _windows, l3_and_mlp

    data, layer, _ = l3_and_mlp()
    windows = _windows(data, 1)
    calls = kernel_stages.stage_calls(layer, windows, torch.randn(1, 1, 256), parallel=False)
    assert list(calls) == [
        "RMSNorm_in",
        "lookup",
        "W_up",
        "RMSNorm_out",
        "W_mix · [u | x]",
        "whole kernel",
    ]
    nbytes = {k: b for k, (_, b) in calls.items()}
    assert nbytes["W_up"] == 1024 * 128 * 4 and nbytes["W_mix · [u | x]"] == 256 * (1024 + 256) * 4
    counts = layer.counts().numpy()
    assert nbytes["lookup"] == pytest.approx(np.mean([counts[w.item()] for w in windows]) * (256 + 128) * 4)
    for call, _ in calls.values():
        call()


def test_bench_entry_hands_profile_to_its_own_entry(monkeypatch):
    import workloads.bench.__main__ as entry
    from workloads.bench import profile

    seen = []
    monkeypatch.setattr(profile, "main", seen.append)
    entry.main(["profile", "--threads", "1", "--quick"])
    assert seen == [["--threads", "1", "--quick"]]


def test_profiling_drops_kinetos_start_and_stop_lines_and_keeps_every_other_stderr_line(capfd):
    from workloads.bench.profiling import profile_steps, without_kineto_notices

    def step():
        os.write(2, b"UserWarning: the step's own\n")
        torch.ones(3).add_(1)

    profile_steps(step, 2)  # the profiler's start and stop: kineto writes "USDT:... profiler_start"
    with without_kineto_notices():
        os.write(2, b"USDT:2026 SyncActivityProfilerHandler.cpp:52] profiler_start\nlast words\n")
    err = capfd.readouterr().err
    assert err == "UserWarning: the step's own\n" * 2 + "last words\n"


@pytest.mark.slow
def test_profile_decode_times_and_floors_every_family_and_the_moe_control():
    from workloads.bench import profile
    from workloads.probe import MachineProbe

    console = Console(record=True, width=200)
    pr = MachineProbe(device="cpu", threads=1, read_bytes_per_s=1e10, gemm_flop_per_s={"8x8x8": 4e9})
    profile.decode(console, pr, quick=True)
    lines = console.export_text().splitlines()
    for name in ("l3", "moe", "moe-1x"):
        line = next(line for line in lines if line.startswith(f"  {name}: "))  # its time, ratio, floor
        assert "speed ÷ dense's" in line and "at 10 GB/s" in line, line
    # the parts table: the mlp row has a time and a share for each of the 4 models and 3 differences
    # (a served MoE block's one-token call is the mlp part too, though it passes the module's hooks)
    mlp = next(line.split() for line in lines if line.split()[:1] == ["mlp"])
    assert len(mlp) == 1 + 4 * 2 + 3, mlp

"""`python -m orchestrator.ratio_check`: the agreement arithmetic on hand-worked ratios, the benchmark JSON's
decode rows read back, and the quickstart's infer jobs built exactly as `workloads.bench infer` builds its
(`JOB`): the same config and the same resolved models, so the two sides are one measurement."""

from dataclasses import replace

import pandas as pd
import pytest

from orchestrator.ratio_check import agreement, bench_ratios
from orchestrator.suites.expansion import load_suite
from orchestrator.suites.files import shipped_suites
from workloads.bench.infer import JOB
from workloads.jobs.infer import _specialize, resolve
from workloads.jobs.setup import prepare_job


def test_agreement_on_hand_worked_ratios():
    demo = pd.DataFrame(
        [
            ("l3", 1, 0.90, False),  # 0.90 / 1.00 - 1 = -10.0%: on the tolerance, ok
            ("l3", 8, 0.95, False),  # 0.95 / 0.85 - 1 = +11.76%: beyond it
            ("moe", 1, 0.50, True),  # equal, but measured under contention: not comparable
            ("moe", 8, 0.44, False),  # the bench has no such row: not ok
            ("scone", 1, 0.75, False),  # 0.75 / 0.80 - 1 = -6.25%
        ],
        columns=["family", "batch_size", "decode_vs_dense", "contended"],
    )
    bench = pd.DataFrame(
        [("l3", 1, 1.00), ("l3", 8, 0.85), ("moe", 1, 0.50), ("moe-ds", 1, 0.20), ("scone", 1, 0.80)],
        columns=["family", "batch_size", "bench_vs_dense"],
    )
    both = agreement(demo, bench).set_index(["family", "batch_size"])
    assert list(both.index) == [("l3", 1), ("l3", 8), ("moe", 1), ("moe", 8), ("scone", 1)]  # no moe-ds
    assert both["rel_diff"].loc[[("l3", 1), ("l3", 8), ("moe", 1), ("scone", 1)]].tolist() == pytest.approx(
        [-0.10, 0.117647, 0.0, -0.0625], abs=1e-6
    )
    assert pd.isna(both.loc[("moe", 8), "rel_diff"])
    assert both["ok"].tolist() == [True, False, False, False, True]
    tight = agreement(demo, bench, tolerance=0.05).set_index(["family", "batch_size"])
    assert tight["ok"].tolist() == [False, False, False, False, False]  # 6.25% > 5%


def test_bench_ratios_reads_the_decode_rows_with_a_ratio():
    rows = [
        {"section": "infer", "name": "prefill bs1 l3", "value": None},
        {"section": "infer", "name": "decode bs1 dense", "value": None},  # the baseline: no ratio
        {"section": "infer", "name": "decode bs1 l3", "value": 0.92, "value_p10": 0.9, "value_p90": 0.95},
        {"section": "infer", "name": "decode bs1 l3 host", "value": 0.99},  # offloaded: not the ratio
        {"section": "infer", "name": "decode bs8 moe-ds", "value": 0.3, "value_p10": 0.29, "value_p90": 0.31},
        {"section": "layer", "name": "decode bs8 l3", "value": 0.5},  # another section
    ]
    got = bench_ratios(rows)
    assert got.to_dict("records") == [
        {"family": "l3", "batch_size": 1, "bench_vs_dense": 0.92, "bench_p10": 0.9, "bench_p90": 0.95},
        {"family": "moe-ds", "batch_size": 8, "bench_vs_dense": 0.3, "bench_p10": 0.29, "bench_p90": 0.31},
    ]
    assert bench_ratios([]).empty


def test_quickstart_infer_jobs_are_the_benchmarks_job():
    """Same preset, data, prompts, lengths, warm-up and rounds, and the same resolved (matched) models."""
    (path,) = [p for p in shipped_suites() if p.stem == "quickstart"]
    jobs = [j for j in load_suite(path).jobs if j.kind == "infer"]
    assert sorted(j.config.family for j in jobs) == ["dense", "l3", "moe"]
    for job in jobs:
        mine = replace(JOB, family=job.config.family)
        assert replace(job.config, model=None, device="auto", dtype="auto") == mine
        resolved = resolve(replace(mine, device="cpu"))  # as the bench's `build` resolves it
        bench_model = prepare_job(
            resolved.model_spec(), None, replace(resolved.data, seq_len=resolved.prompt_len),
            specialize=lambda m, cfg=resolved: _specialize(cfg, m),
        ).model  # fmt: skip
        assert bench_model == job.config.model

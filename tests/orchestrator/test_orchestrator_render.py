"""What people read: `compare` fits 80 columns without cutting a cell, `--wide` shows every column, the
errors of jobs that did not finish follow the table; piped progress shows life."""

import io
import re
import sys
from types import SimpleNamespace

import pandas as pd
import pytest
from rich.console import Console

from orchestrator.api import JobState
from orchestrator.cli import live, render
from orchestrator.cli.live import progress_text
from orchestrator.runs import driver as driver_module
from orchestrator.runs.driver import Driver

ROWS = [  # api.compare's frame for the quickstart suite (numbers of a captured `make demo`), one job failed
    ("train", "dense", "tiny",
     6.52e6, 8.62e6, 1.321, 0.0, 6.494, 661.0, 780.0, 941.0, None, None, "finished"),
    ("infer", "dense", "tiny",
     6.52e6, 8.62e6, 1.321, 0.0, None, None, 413.0, 526.0, None, None, "finished"),
    ("train", "l3", "tiny",
     6.62e6, 33.79e6, 5.102, 2e-4, 6.005, 405.0, 603.0, 1314.0, None, 129.0, "finished"),
    ("infer", "l3", "tiny",
     6.62e6, 33.79e6, 5.102, 2e-4, None, None, 288.0, 574.0, None, None, "finished"),
    ("train", "moe", "tiny",
     6.47e6, 34.01e6, 5.253, -0.0078, None, None, None, None, None, None, "oom"),
    ("infer", "moe", "tiny",
     6.47e6, 34.01e6, 5.253, -0.0078, None, None, 123.0, 653.0, 2.217, None, "finished"),
]  # fmt: skip
COLUMNS = ["job", "family", "preset", "active", "total", "sparsity", "match_err", "val_loss", "val_ppl",
           "tokens_per_s", "peak_mem_mib", "moe_max/mean", "l3_rows/tok", "status"]  # fmt: skip
ERROR = "RuntimeError: [enforce fail at alloc_cpu.cpp:121] DefaultCPUAllocator: can't allocate memory"


def frame() -> pd.DataFrame:
    df = pd.DataFrame(ROWS, columns=COLUMNS)
    df["error"] = [None, None, None, None, ERROR, None]
    return df


def shown(width: int, wide: bool = False) -> str:
    out = Console(width=width, file=io.StringIO(), force_terminal=False, color_system=None)
    render.print_compare(out, frame(), wide)
    return out.file.getvalue()


@pytest.mark.parametrize("width", [80, 120])
def test_default_compare_fits_without_cutting_a_cell(width):
    text = shown(width)
    lines = text.splitlines()
    assert "…" not in text and max(len(line) for line in lines) <= width
    for kind, family in (("train", "dense"), ("infer", "l3"), ("train", "moe")):
        assert f"{kind} {family} tiny" in text, text
    # quality, then the measured match error, then throughput: the columns an iso-sparse reader needs first
    assert re.search(r"train l3 tiny\s+6\.62M\s+33\.79M\s+6\.005\s+\+0\.02%\s+603\s+.*finished", text), text
    assert re.search(r"train moe tiny\s+6\.47M\s+34\.01M\s+.*oom", text), text
    assert "train moe tiny: RuntimeError: [enforce fail" in text  # the error follows the table
    assert "DefaultCPUAllocator: can't allocate memory" in " ".join(text.split())


def test_wider_terminals_get_more_columns():
    narrow, wider = shown(80), shown(120)
    assert "match err" in narrow and "val ppl" not in narrow and "val ppl" in wider
    row = r"train l3 tiny\s+6\.62M\s+33\.79M\s+6\.005\s+\+0\.02%\s+603\s+5\.102\s+1,314\s+405\s.*finished"
    assert re.search(row, wider), wider


@pytest.mark.parametrize("mixed", [False, True])
def test_bits_per_byte_leads_when_the_rows_mix_tokenizers(mixed):
    df = frame()
    df["val_bpb"] = [2.345, None, 1.987, None, None, None]
    df["bytes/tok"] = [4.0, None, 4.4 if mixed else 4.0, None, None, None]
    out = Console(width=80, file=io.StringIO(), force_terminal=False, color_system=None)
    render.print_compare(out, df)
    text = out.file.getvalue()
    header = next(line for line in text.splitlines() if line.strip().startswith("job"))
    assert max(len(line) for line in text.splitlines()) <= 80
    if mixed:  # per-token losses in two units: bits per byte is the quality column, val loss moves back
        assert header.split()[:5] == ["job", "active", "total", "val", "bpb"] and "val loss" not in header
        assert re.search(r"train l3 tiny\s+6\.62M\s+33\.79M\s+1\.987\s+\+0\.02%\s", text), text
    else:
        assert header.split()[:5] == ["job", "active", "total", "val", "loss"], header


def test_match_error_reads_as_a_signed_percent():
    text = shown(120)
    assert re.search(r"train dense tiny\s+6\.52M\s+8\.62M\s+6\.494\s+0\s", text), text  # exact: "0"
    assert re.search(r"infer moe tiny\s.*\s-0\.78%\s", text), text
    assert "0.0002" not in text and "-0.0078" not in text


def test_validate_shows_the_planned_match_errors_as_signed_percents():
    def job(name, active_err, total_err):
        match = {
            "params_active": 8.06e8,
            "params_total": 3.09e9,
            "active_rel_err": active_err,
            "total_rel_err": total_err,
        }
        return SimpleNamespace(
            name=name,
            fingerprint="f" * 64,
            kind="train",
            match=match,
            resources=SimpleNamespace(num_cpus=8, num_gpus=1, num_workers=8),
        )

    jobs = [job("dense", 0.0, None), job("moe", -0.004698, 0.004302)]
    suite = SimpleNamespace(name="downstream", jobs=jobs)
    out = Console(width=120, file=io.StringIO(), force_terminal=False, color_system=None)
    render.print_jobs_frame(out, suite)
    text = out.file.getvalue()
    assert re.search(r"dense .*\s3,090\.00M\s+0\s+-\s+corpus", text), text
    assert re.search(r"moe .*\s3,090\.00M\s+-0\.47%\s+\+0\.43%\s+corpus", text), text
    assert "0.004" not in text


def test_a_match_error_column_without_values_is_left_out():
    df = frame().assign(match_err=None)  # dummy jobs: no model, nothing matched
    out = Console(width=120, file=io.StringIO(), force_terminal=False, color_system=None)
    render.print_compare(out, df)
    assert "match err" not in out.file.getvalue() and "val loss" in out.file.getvalue()


def test_wide_compare_shows_every_column_and_the_error():
    text = shown(240, wide=True)
    for column in ("sparsity", "match_err", "val_ppl", "moe_max/mean", "l3_rows/tok", "error"):
        assert column in text
    assert ERROR in text and "…" not in text


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_progress_text_has_step_loss_rate_and_eta():
    job = JobState("train/l3/tiny/s0", "train", {}, state="running", total_steps=120, tokens_per_step=512)
    job.started_s = 0.0
    assert progress_text(job, 30.0) == "running for 30s, no step reported yet"
    job.first_metric, job.step, job.loss, job.last_metric = (10.0, 0), 40, 6.1234, (30.0, 40)
    # 40 steps in 20 s: 2 steps/s = 1,024 tok/s; 79 steps to go = 39.5 s
    assert progress_text(job, 30.0) == "step 41/120, loss 6.123, 1,024 tok/s, ETA 40s"


def test_the_live_table_counts_steps_done_and_a_finished_job_shows_its_last_step():
    running = JobState("train/a", "train", {}, state="running", total_steps=30)
    finished = JobState("train/b", "train", {}, state="finished", total_steps=30)
    running.step, finished.step = 4, 28  # streamed steps count from 0; log_every need not hit the last
    dummy = JobState("dummy/c", "dummy", {}, state="queued")
    assert [live.step_cell(j) for j in (running, finished, dummy)] == ["5/30", "30/30", "-"]
    report = SimpleNamespace(jobs={j.name: j for j in (running, finished, dummy)},
                             suite=SimpleNamespace(name="s"), counts=lambda: {})  # fmt: skip
    out = Console(width=80, file=io.StringIO(), force_terminal=False, color_system=None)
    out.print(live.Progress(out)._table(report))
    cells = [line.replace("│", " ").split() for line in out.file.getvalue().splitlines() if "train/" in line]
    rows = {cell[0]: cell[3] for cell in cells}  # job, state, attempt, step
    assert rows == {"train/a": "5/30", "train/b": "30/30"}


def test_piped_progress_prints_a_line_at_least_every_30_s(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(live.time, "monotonic", clock)
    job = JobState("train/dense/tiny/base/s0", "train", {}, total_steps=1000, tokens_per_step=100)
    report = SimpleNamespace(jobs={job.name: job}, suite=SimpleNamespace(name="s"),
                             counts=lambda: {job.state: 1})  # fmt: skip
    out = Console(width=200, file=io.StringIO(), force_terminal=False)
    progress = live.Progress(out)
    stamps = []
    for second in range(0, 200):
        clock.now = 1000.0 + second
        if second == 5:
            job.state, job.started_s = "running", clock.now
        if second >= 10:
            job.first_metric = job.first_metric or (1010.0, 0)
            job.step, job.loss, job.last_metric = second - 10, 5.0, (clock.now, second - 10)
        before = out.file.getvalue().count("\n")
        progress.tick(report)
        if out.file.getvalue().count("\n") > before:
            stamps.append(second)
    assert max(b - a for a, b in zip(stamps, stamps[1:], strict=False)) <= 30
    line = "[ 185.0s] train/dense/tiny/base/s0: step 176/1000, loss 5, 100 tok/s, ETA 13m44s"
    assert line in out.file.getvalue()
    assert "\x1b[" not in out.file.getvalue()  # no ANSI codes in a pipe


def test_the_first_progress_line_rates_the_steps_by_the_job_s_clock(monkeypatch):
    """The driver drains a job's events in batches: 25 steps that took 12.5 s on the worker arrive at one
    driver instant. The first line rates them by the worker's timestamps, as every later line does."""
    job = SimpleNamespace(name="train/dense/tiny/base/s0", match={}, fingerprint="f", timing="shared")
    tracker = SimpleNamespace(start_job=lambda *a: "run", log_metrics=lambda *a: None)
    report = SimpleNamespace(jobs={job.name: JobState(job.name, "train", {}, total_steps=300,
                                                      tokens_per_step=128, log_every=5)})  # fmt: skip
    driver = Driver(SimpleNamespace(name="s", experiment="e", jobs=[job]), tracker, "parent", report)
    monkeypatch.setattr(driver_module.time, "monotonic", lambda: 5000.0)  # every event arrives at once
    start = {"node": "n", "host": "h", "hw": "cpu"}
    driver.on_event(SimpleNamespace(job=job.name, attempt=1, kind="start", payload=start))
    for step in range(0, 25):  # the worker's clock: 0.5 s a step, streamed in flushes of log_every = 5
        sent_s = 100.0 + 0.5 * (step // 5 * 5 + 4) + 0.001 * (step % 5)  # a flush sends its 5 back to back
        driver.on_event(SimpleNamespace(job=job.name, attempt=1, kind="metrics", step=step,
                                        payload={"train/loss": 5.0}, time_s=sent_s))  # fmt: skip
    state = report.jobs[job.name]
    assert state.rate_steps_per_s() == 2.0  # steps 4 → 24 over 10 s, the flushes' own timestamps
    # 2 steps/s · 128 tokens; 275 steps to go at 2 steps/s = 137.5 s
    assert progress_text(state, 5000.0) == "step 25/300, loss 5, 256 tok/s, ETA 2m18s"


def test_no_rate_before_the_second_flush():
    job = JobState("train/l3/tiny/s0", "train", {}, state="running", total_steps=120, tokens_per_step=512,
                   log_every=5)  # fmt: skip
    for step in range(5):  # one flush: its steps are sent within microseconds of each other
        if job.flushed_at(step):
            job.first_metric = job.first_metric or (7.0 + 1e-5 * step, step)
            job.last_metric = (7.0 + 1e-5 * step, step)
        job.step = step
    assert job.rate_steps_per_s() is None  # was 236,086 tok/s: 4 steps over 40 µs of sending
    assert progress_text(job, 9.0) == "step 5/120"
    assert [s for s in range(12) if job.flushed_at(s)] == [4, 9]
    assert JobState("x", "train", {}, total_steps=7, log_every=5).flushed_at(6)  # the last step flushes


@pytest.mark.parametrize(("columns", "width"), [("80", 80), ("132", 132), (None, 80), ("wide", 80)])
def test_piped_output_honours_an_explicit_columns(monkeypatch, columns, width):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    assert render.console().width == width


def test_eval_rows_show_their_accuracy_and_empty_columns_are_left_out():
    df = frame()
    eval_row = ["eval", "l3", "tiny", 6.62e6, 33.79e6, 5.102, 2e-4]
    df.loc[len(df)] = eval_row + [None] * 6 + ["finished"] + [None]
    df["avg_acc"] = [None] * 6 + [0.375]
    text = shown_frame(df, 80)
    header = next(line for line in text.splitlines() if line.strip().startswith("job"))
    assert header.split()[:6] == ["job", "active", "total", "val", "loss", "acc"], header
    assert re.search(r"eval l3 tiny\s+6\.62M\s+33\.79M\s+-\s+0\.375\s", text), text
    plain = next(line for line in shown_frame(frame(), 80).splitlines() if line.strip().startswith("job"))
    assert "acc" not in plain.split() and "match" in plain  # no eval job: no accuracy column


def shown_frame(df: pd.DataFrame, width: int) -> str:
    out = Console(width=width, file=io.StringIO(), force_terminal=False, color_system=None)
    render.print_compare(out, df)
    return out.file.getvalue()


@pytest.mark.parametrize("wide", [False, True])
def test_speeds_measured_under_contention_are_marked_with_a_footnote(wide):
    df = frame()
    df["contended"] = [True, False, False, True, None, False]
    out = Console(width=80, file=io.StringIO(), force_terminal=False, color_system=None)
    render.print_compare(out, df, wide)
    text = out.file.getvalue()
    assert "~780" in text and "~288" in text  # train dense, infer l3
    assert "~413" not in text and "~603" not in text and " 413" in text and " 603" in text
    assert render.CONTENDED_NOTE in " ".join(text.split())
    if not wide:
        assert re.search(r"infer l3 tiny\s+6\.62M\s+33\.79M\s+-\s+\+0\.02%\s+~288\s", text), text
        assert max(len(line) for line in text.splitlines()) <= 80


def test_no_footnote_when_every_speed_ran_alone():
    df = frame()
    df["contended"] = [False, False, False, False, None, False]
    out = Console(width=80, file=io.StringIO(), force_terminal=False, color_system=None)
    render.print_compare(out, df)
    text = out.file.getvalue()
    assert "~" not in text and "contention" not in text


def test_the_seeds_table_keeps_each_cell_on_one_line_and_drops_bpb_first():
    seeds = pd.DataFrame(
        [("dense", 3, "6.469 ± 0.012", "2.361", "—", "—", ""),
         ("MoE dropless", 3, "6.464 ± 0.043", "2.359", "-0.005", "[-0.131, +0.121]", "within noise")],
        columns=["config", "seeds", "val loss", "val bpb", "Δ vs dense", "95% interval", "gap"],
    )  # fmt: skip
    for width, bpb in ((80, False), (120, True)):
        out = Console(width=width, file=io.StringIO(), force_terminal=False, color_system=None)
        render.print_verdict(out, ["dense < MoE dropless"], seeds)
        text = out.file.getvalue()
        assert re.search(
            r"MoE dropless\s+3\s+6\.464 ± 0\.043\s.*\[-0\.131, \+0\.121\]\s+within noise", text
        ), text
        assert ("val bpb" in text) is bpb and max(map(len, text.splitlines())) <= width

"""`isosparse report SUITE`: gather a suite's job runs from MLflow, build the `results` report, and log it
(HTML, Markdown, figures) as artifacts of the suite's newest parent run, so it shows in the MLflow UI.

Which runs: for every job the suite expands to now, its FINISHED run with the same fingerprint; else the
newest run of that job name (any status, unlike `compare`, which shows finished numbers only: a failed
job shows in the report's "Runs not finished", and a job last run under other code with its older numbers).
Loss curves come from the runs' `train/loss` histories; the load figure (MoE expert tokens, L3 rows per
token) from the arrays that train jobs put in their result.json (`BenchResult.arrays`, keys below).
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from orchestrator.runs.tracking import Tracker, home
from orchestrator.suites.expansion import Suite
from results import load, names, report

ARTIFACT_DIR = "report"
HISTORY_KEYS = (names.TRAIN_LOSS,)
# BenchResult.arrays keys for the load-distribution figure.
EXPERT_TOKENS = "expert_tokens"  # (moe layers, experts) routes per expert
L3_ROWS = "l3_rows_per_token"  # rows d_t of each token id (first L3 layer)


@dataclass(frozen=True)
class ReportOutcome:
    paths: report.ReportPaths
    parent_run_id: str | None  # where the report was logged; None when the suite has no parent run yet
    n_runs: int


def suite_job_runs(tracker: Tracker, spec: Suite) -> pd.DataFrame:
    """The `mlflow.search_runs` rows of the suite's jobs (one per job at most), see the module docstring."""
    runs = tracker.search(
        spec.experiment,
        names.tag_filter(names.TAG_RUN_TYPE, names.RUN_TYPE_JOB) + " and " + _of_suite(spec),
    )
    if runs.empty:
        return runs
    runs = runs.sort_values("start_time", ascending=False)  # newest first: first match wins below
    fp, job, finished = (
        runs[names.tag_column(names.TAG_FINGERPRINT)],
        runs[names.tag_column(names.TAG_JOB)],
        runs["status"] == "FINISHED",
    )
    chosen = []
    for spec_job in spec.jobs:
        exact = runs.index[finished & (fp == spec_job.fingerprint)]
        by_name = runs.index[job == spec_job.name]
        pick = exact if len(exact) else by_name
        if len(pick):
            chosen.append(pick[0])
    return runs.loc[list(dict.fromkeys(chosen))]


def _history(tracker: Tracker, runs: pd.DataFrame) -> pd.DataFrame:
    return load.history_from_mlflow(
        {rid: {key: tracker.metric_history(rid, key) for key in HISTORY_KEYS} for rid in runs["run_id"]}
    )


def _label(row: pd.Series) -> str:
    return "/".join(
        str(row.get(names.tag_column(t))) for t in (names.TAG_FAMILY, names.TAG_PRESET, names.TAG_VARIANT)
    )


def _load_arrays(tracker: Tracker, runs: pd.DataFrame) -> report.LoadArrays:
    """Per-run arrays from result.json of finished train runs (absent: that run is not in the figure)."""
    experts, rows = {}, {}
    for _, row in runs.iterrows():
        if row["status"] != "FINISHED" or row.get(names.tag_column(names.TAG_JOB_KIND)) != "train":
            continue
        try:
            arrays = json.loads(tracker.download_text(row["run_id"], "result.json")).get("arrays", {})
        except FileNotFoundError:  # a run without result.json (older code): nothing to draw for it
            continue
        if EXPERT_TOKENS in arrays:
            experts[_label(row)] = np.asarray(arrays[EXPERT_TOKENS], dtype=np.float64)
        if L3_ROWS in arrays:
            rows[_label(row)] = np.asarray(arrays[L3_ROWS], dtype=np.float64)
    return report.LoadArrays(expert_tokens=experts, l3_rows_per_token=rows)


def _of_suite(spec: Suite) -> str:
    return names.tag_filter(names.TAG_SUITE, spec.name)


def newest_parent(tracker: Tracker, spec: Suite) -> str | None:
    query = names.tag_filter(names.TAG_RUN_TYPE, names.RUN_TYPE_SUITE) + " and " + _of_suite(spec)
    parents = tracker.search(spec.experiment, query)
    if parents.empty:
        return None
    return str(parents.sort_values("start_time", ascending=False)["run_id"].iloc[0])


def build_and_log(
    spec: Suite,
    tracker: Tracker,
    *,
    out_dir: str | Path | None = None,
    parent_run_id: str | None = None,
    figures: bool = True,
) -> ReportOutcome:
    """Write the report of an expanded suite under out_dir (default `$ISOSPARSE_HOME/reports/<suite>`)
    and log it onto the suite's parent run (`parent_run_id`, else its newest one)."""
    runs = suite_job_runs(tracker, spec)
    out = Path(out_dir) if out_dir is not None else home() / "reports" / spec.name
    paths = report.build_report(
        runs,
        _history(tracker, runs) if not runs.empty else None,
        out_dir=out,
        title=f"isosparse report: {spec.name}",
        load_arrays=_load_arrays(tracker, runs) if not runs.empty else None,
        figures=figures,
    )
    parent = parent_run_id or newest_parent(tracker, spec)
    if parent is not None:
        files = {paths.html: ARTIFACT_DIR, paths.markdown: ARTIFACT_DIR}
        files |= {fig: f"{ARTIFACT_DIR}/{report.FIGURE_DIR}" for fig in paths.figures}
        files |= {csv: f"{ARTIFACT_DIR}/{report.TABLE_DIR}" for csv in paths.tables}
        tracker.log_files(parent, files)
    return ReportOutcome(paths, parent, len(runs))

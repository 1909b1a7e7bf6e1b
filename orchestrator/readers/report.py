"""`isosparse report TARGET`: a recorded invocation's job runs → the `results` report, logged (HTML,
Markdown, figures) onto its parent run. Per recorded job: its FINISHED run of that fingerprint, else the
newest run of that job name (any status: unlike `compare`, failed jobs show under "Runs not finished").
Loss curves come from `train/loss` histories; load figures from train jobs' result.json arrays.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from orchestrator.readers.recorded import RecordedSuite
from orchestrator.runs.store_path import home
from orchestrator.runs.tracking import Tracker
from results import load, names, report

ARTIFACT_DIR = "report"
HISTORY_KEYS = (names.TRAIN_LOSS,)
# BenchResult.arrays keys for the load-distribution figure.
EXPERT_TOKENS = "expert_tokens"  # (moe layers, experts) routes per expert
L3_ROWS = "l3_rows_per_token"  # rows d_t of each token id (first L3 layer)


@dataclass(frozen=True)
class ReportOutcome:
    paths: report.ReportPaths
    parent_run_id: str  # the invocation the report is of, and where it was logged
    n_runs: int


def suite_job_runs(tracker: Tracker, spec: RecordedSuite) -> pd.DataFrame:
    """The `mlflow.search_runs` rows of the suite's jobs (one per job at most), see the module docstring."""
    runs = tracker.runs(spec.experiment, {names.TAG_RUN_TYPE: names.RUN_TYPE_JOB, names.TAG_SUITE: spec.name})
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


def build_and_log(
    spec: RecordedSuite, tracker: Tracker, *, out_dir: str | Path | None = None, figures: bool = True
) -> ReportOutcome:
    """Write the report of a recorded suite invocation under out_dir (default
    `$ISOSPARSE_HOME/reports/<suite>`) and log it onto that invocation's parent run."""
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
    files = {paths.html: ARTIFACT_DIR, paths.markdown: ARTIFACT_DIR}
    files |= {fig: f"{ARTIFACT_DIR}/{report.FIGURE_DIR}" for fig in paths.figures}
    files |= {csv: f"{ARTIFACT_DIR}/{report.TABLE_DIR}" for csv in paths.tables}
    tracker.log_files(spec.parent_run_id, files)
    return ReportOutcome(paths, spec.parent_run_id, len(runs))

"""What a suite invocation recorded, read back from MLflow: its experiment, suite name and jobs.

The readers (`status`, `compare`, `report`) start here and never expand a suite or prepare data: a suite
file is read only for its name and experiment; the jobs come from the parent run's `suite_jobs.json`.
"""

import json
from dataclasses import dataclass, field

import pandas as pd

from orchestrator.runs.sqlite_reader import Reader
from orchestrator.suites.files import SuiteError, identity
from results import names

LABELS = ("family", "preset", "variant", "seed", "group")
SUITE_RUNS = {names.TAG_RUN_TYPE: names.RUN_TYPE_SUITE}  # the parent runs, one per suite invocation


@dataclass(frozen=True)
class RecordedJob:
    """The part of a `JobSpec` the readers need, as the suite's parent run recorded it."""

    name: str
    kind: str
    fingerprint: str
    labels: dict[str, str]
    match: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class RecordedSuite:
    name: str
    experiment: str
    jobs: tuple[RecordedJob, ...]
    parent_run_id: str


def jobs_json(jobs) -> str:
    """The `suite_jobs.json` artifact of a parent run: its expanded jobs (JobSpecs) as recorded."""
    keep = [
        {
            "name": j.name,
            "kind": j.kind,
            "fingerprint": j.fingerprint,
            "labels": dict(j.labels),
            "match": dict(j.match),
        }
        for j in jobs
    ]
    return json.dumps(keep, indent=1)


def suite_runs(store: Reader, target: str | None) -> pd.DataFrame:
    """Parent runs of a target: a suite file or shipped name (its experiment), an experiment name, a
    recorded suite name (what `status` prints, also when the file is gone or elsewhere), a parent run id
    (or the prefix `status` prints), or every suite run when target is None."""
    if target is None:
        return store.runs(None, SUITE_RUNS)
    try:
        return store.runs(identity(target)[1], SUITE_RUNS)
    except SuiteError:
        pass
    if store.experiment_id(target, create=False) is not None:
        return store.runs(target, SUITE_RUNS)
    runs = store.runs(None, SUITE_RUNS)
    if runs.empty:
        return runs
    named = runs[runs[names.tag_column(names.TAG_SUITE)] == target]  # the name `status` prints
    return named if not named.empty else runs[runs["run_id"].str.startswith(target)]


def locate(store: Reader, target: str) -> RecordedSuite:
    """The newest recorded invocation of `target` (see `suite_runs`; a suite file's own suite name wins
    over other suites sharing its experiment). SuiteError when nothing of that name was recorded."""
    runs = suite_runs(store, target)
    try:
        name = identity(target)[0]
        runs = runs[runs[names.tag_column(names.TAG_SUITE)] == name] if not runs.empty else runs
    except SuiteError:
        pass
    if runs.empty:
        raise SuiteError(
            target, [("", f"no suite file, experiment or suite run of that name in {store.uri}")]
        )
    parent = runs.sort_values("start_time").iloc[-1]
    name = parent[names.tag_column(names.TAG_SUITE)]
    experiment = store.experiment_name(parent["experiment_id"])
    try:
        jobs = tuple(
            RecordedJob(**j) for j in json.loads(store.download_text(parent["run_id"], names.SUITE_JOBS))
        )
    except FileNotFoundError:  # a parent run from before suite_jobs.json: the jobs that have runs
        jobs = _jobs_from_runs(store, experiment, name)
    if not jobs:
        raise SuiteError(target, [("", f"its newest run ({parent['run_id']}) recorded no jobs")])
    return RecordedSuite(name, experiment, jobs, parent["run_id"])


def _jobs_from_runs(store: Reader, experiment: str, suite: str) -> tuple[RecordedJob, ...]:
    runs = store.runs(experiment, {names.TAG_RUN_TYPE: names.RUN_TYPE_JOB, names.TAG_SUITE: suite})
    if runs.empty:
        return ()
    newest = runs.sort_values("start_time").groupby(names.tag_column(names.TAG_JOB)).tail(1)
    match_cols = [c for c in newest if c.startswith(names.metric_column(names.MATCH_PREFIX))]
    return tuple(
        RecordedJob(
            name=row[names.tag_column(names.TAG_JOB)],
            kind=row[names.tag_column(names.TAG_JOB_KIND)],
            fingerprint=row[names.tag_column(names.TAG_FINGERPRINT)],
            labels={k: str(row.get(names.tag_column(names.label_tag(k)))) for k in LABELS},
            match={
                c.removeprefix(names.metric_column(names.MATCH_PREFIX)): float(row[c])
                for c in match_cols
                if pd.notna(row[c])
            },
        )
        for _, row in newest.sort_values(names.tag_column(names.TAG_JOB)).iterrows()
    )

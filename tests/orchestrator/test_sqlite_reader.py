"""The readers' sqlite path against MLflow on one store MLflow wrote: identical frames for every query the
readers make (so a change of MLflow's schema fails here), identical compare / verdict / status, and
`compare` / `status` processes that import no MLflow, torch, ray, scipy.stats or suite expansion."""

import json
import math
import sqlite3
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from orchestrator.readers import monitor, recorded
from orchestrator.runs.outcomes import Completion
from orchestrator.runs.sqlite_reader import SqliteReader, open_reader
from orchestrator.runs.tracking import Tracker
from orchestrator.suites.spec import JobSpec
from results import names

REPO = Path(__file__).resolve().parents[2]
JOB = {names.TAG_RUN_TYPE: names.RUN_TYPE_JOB}
SUITE = "parity"
# What `compare` / `status` must not import (typer itself imports pydantic when a command runs).
HEAVY = ("mlflow", "sqlalchemy", "torch", "ray", "scipy.stats", "matplotlib", "workloads.jobs")
HEAVY += ("orchestrator.suites.expansion", "orchestrator.suites.schema", "orchestrator.planning")


def job(family: str, seed: int) -> JobSpec:
    labels = {"family": family, "preset": "tiny", "variant": "base", "seed": str(seed), "group": f"g/s{seed}"}
    match = {"params_active": 100.0, "params_total": 100.0 if family == "dense" else 400.0}
    resolved = {"kind": "train", "model": {"family": family, "d": 64}, "seed": seed, "note": "é ü ✓"}
    return JobSpec(
        f"train/{family}/s{seed}", "train", None, resolved, f"fp-{family}-{seed}", labels, match=match
    )


def result(family: str, seed: int) -> str:
    loss = {"dense": 6.0, "l3": 5.5}[family] + 0.01 * seed
    metrics = {
        names.EVAL_VAL_LOSS: loss,
        names.PARAMS_ACTIVE: 100,
        names.PARAMS_TOTAL: 100 if family == "dense" else 400,
    }
    return json.dumps({"metrics": metrics, "params": {}, "info": {"note": "x"}})


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Two experiments written through MLflow: a suite invocation (dense and l3 over 3 seeds, one l3 job
    failed), a running run, a deleted run, a NaN metric, a metric with a history, two runs started in the
    same millisecond, and a deleted experiment."""
    folder = tmp_path_factory.mktemp("parity")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    tracker = Tracker(uri)
    jobs = [job(f, s) for f in ("dense", "l3") for s in range(3)]
    parent = tracker.start_suite("exp-a", SUITE, {})
    tracker.log_text(parent, recorded.jobs_json(jobs), names.SUITE_JOBS)
    for spec in jobs:
        run = tracker.start_job("exp-a", parent, spec, 1, {names.TAG_SUITE: SUITE})
        failed = spec.name == "train/l3/s2"
        done = Completion(spec.name, 1, "failed", error="RuntimeError: boom")
        if not failed:
            done = Completion(
                spec.name, 1, "finished", result_json=result(spec.labels["family"], int(spec.labels["seed"]))
            )
        tracker.finish_job(run, spec.fingerprint, "exp-a", done)
    tracker.end_suite(parent, "FAILED")
    client = tracker.client
    exp_b = tracker.experiment_id("exp-b")
    running = client.create_run(exp_b, start_time=1_700_000_000_000, tags={names.TAG_RUN_TYPE: "job"})
    twin = client.create_run(exp_b, start_time=1_700_000_000_000, tags={names.TAG_RUN_TYPE: "job"})
    client.log_metric(running.info.run_id, "nan_metric", math.nan)
    for step, value in enumerate((3.0, 2.0, 1.0)):
        client.log_metric(twin.info.run_id, "history", value, step=step)
    client.log_param(twin.info.run_id, "long", "v" * 500)
    gone = client.create_run(exp_b, tags={names.TAG_RUN_TYPE: "job"})
    client.delete_run(gone.info.run_id)
    exp_c = tracker.experiment_id("exp-deleted")
    orphan = client.create_run(exp_c, tags={names.TAG_RUN_TYPE: "job"})
    client.delete_experiment(
        exp_c
    )  # deletes its runs too; restored, the run is active in a deleted experiment
    client.restore_run(orphan.info.run_id)
    return uri, parent, tracker


QUERIES = [
    (experiment, tags, status)
    for experiment in ("exp-a", "exp-b", "exp-deleted", "no-such-experiment", None)
    for tags, status in (
        (None, None),
        (JOB, None),
        (JOB, "FINISHED"),
        (JOB | {names.TAG_SUITE: SUITE}, None),
        ({names.TAG_RUN_TYPE: names.RUN_TYPE_SUITE}, None),
        ({names.TAG_RUN_TYPE: "no-such-kind"}, None),
    )
]


def test_open_reader_reads_a_sqlite_store_without_mlflow(store):
    uri, _, _ = store
    assert isinstance(open_reader(uri), SqliteReader)


@pytest.mark.parametrize(("experiment", "tags", "status"), QUERIES)
def test_every_query_answers_as_mlflow_does(store, experiment, tags, status):
    uri, _, tracker = store
    fast, slow = (
        SqliteReader(uri, Path(uri[len("sqlite:///") :])).runs(experiment, tags, status),
        tracker.runs(experiment, tags, status),
    )
    pd.testing.assert_frame_equal(fast.sort_index(axis=1), slow.sort_index(axis=1))


def test_the_store_holds_what_the_parity_is_about(store):
    """The parity above means something only if the store has the hard cases: NaN, history, ties, deleted."""
    uri, _, tracker = store
    b = tracker.runs("exp-b")
    assert (
        len(b) == 2 and b["start_time"].nunique() == 1 and b["end_time"].isna().all()
    )  # the deleted run is not there
    assert b["metrics.nan_metric"].isna().all()  # logged NaN (MLflow stores 0 and is_nan) reads back NaN
    assert b["metrics.history"].dropna().tolist() == [1.0]  # the last step's value
    assert list(b["run_id"]) == sorted(b["run_id"])  # same start: by run id
    a = tracker.runs("exp-a", JOB)
    assert len(a) == 6 and a["params.model.family"].notna().all() and (a["status"] == "FAILED").sum() == 1
    assert tracker.runs(None, JOB)["experiment_id"].nunique() == 2  # the deleted experiment is left out
    assert len(tracker.runs("exp-deleted", JOB)) == 1  # ... unless asked for by name


def test_experiments_and_artifacts_answer_as_mlflow_does(store):
    uri, parent, tracker = store
    fast = open_reader(uri)
    for name in ("exp-a", "exp-b", "exp-deleted", "no-such-experiment"):
        assert fast.experiment_id(name) == tracker.experiment_id(name, create=False), name
    for exp_id in ("0", "1", "2", "3", "99", None):
        assert fast.experiment_name(exp_id) == tracker.experiment_name(exp_id), exp_id
    child = tracker.runs("exp-a", JOB, "FINISHED")["run_id"].iloc[0]
    for run_id, artifact in ((parent, names.SUITE_JOBS), (child, "config.yaml"), (child, "result.json")):
        assert fast.download_text(run_id, artifact) == tracker.download_text(run_id, artifact)
    for run_id in (parent, "no-such-run"):
        for reader in (fast, tracker):
            with pytest.raises(FileNotFoundError):
                reader.download_text(run_id, "missing.txt")


def test_compare_verdict_and_status_are_the_same_through_either_reader(store, monkeypatch):
    uri, parent, tracker = store
    fast = (monitor.compare(SUITE, uri), monitor.verdict("exp-a", uri), monitor.status(parent, uri))
    assert len(fast[0]) == 6 and fast[1][0]  # six jobs, and a verdict over 3 seeds
    monkeypatch.setattr(monitor, "open_reader", lambda _uri: tracker)
    slow = (monitor.compare(SUITE, uri), monitor.verdict("exp-a", uri), monitor.status(parent, uri))
    pd.testing.assert_frame_equal(fast[0], slow[0])
    assert fast[1][0] == slow[1][0]
    pd.testing.assert_frame_equal(fast[1][1], slow[1][1])
    for a, b in zip(fast[2], slow[2], strict=True):
        pd.testing.assert_frame_equal(a, b)


def test_a_store_laid_out_otherwise_is_read_through_mlflow(store, tmp_path):
    uri, _, _ = store
    copy = tmp_path / "renamed.db"
    with sqlite3.connect(uri[len("sqlite:///") :]) as src, sqlite3.connect(copy) as dst:
        src.backup(dst)
    assert isinstance(open_reader(f"sqlite:///{copy}"), SqliteReader)
    with sqlite3.connect(copy) as con:
        con.execute("ALTER TABLE latest_metrics RENAME COLUMN is_nan TO nan_flag")
    assert SqliteReader.of_layout(f"sqlite:///{copy}", copy) is None
    assert isinstance(open_reader(f"sqlite:///{copy}"), Tracker)


@pytest.mark.parametrize(("command", "printed"), [("compare", "train dense"), ("status", "train/l3/s2")])
def test_a_reader_in_a_fresh_process_imports_no_mlflow_torch_ray_scipy_stats_or_suite_expansion(
    store, command, printed
):
    uri, _, _ = store
    code = (
        "import json, sys\n"
        "from orchestrator.cli import app\n"
        f"try:\n    app([{command!r}, {SUITE!r}, '--tracking-uri', {uri!r}])\n"
        "except SystemExit as e:\n    assert not e.code, e.code\n"
        f"heavy = {HEAVY!r}\n"
        "found = [m for m in sys.modules if any(m == h or m.startswith(h + '.') for h in heavy)]\n"
        "print(json.dumps(sorted(found)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "COLUMNS": "120", "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr
    *table, modules = out.stdout.strip().splitlines()
    assert printed in "\n".join(table)  # the command printed its table
    assert json.loads(modules) == []


def test_an_artifact_stored_elsewhere_is_fetched_through_mlflow(store, tmp_path, monkeypatch):
    uri, parent, _ = store
    copy = tmp_path / "remote.db"
    with sqlite3.connect(uri[len("sqlite:///") :]) as src, sqlite3.connect(copy) as dst:
        src.backup(dst)
    with sqlite3.connect(copy) as con:
        con.execute("UPDATE runs SET artifact_uri = 's3://bucket/run' WHERE run_uuid = ?", (parent,))
    asked = []
    monkeypatch.setattr(Tracker, "download_text", lambda self, *args: asked.append((self.uri, *args)) or "x")
    reader = open_reader(f"sqlite:///{copy}")
    assert reader.download_text(parent, names.SUITE_JOBS) == "x"
    assert asked == [(f"sqlite:///{copy}", parent, names.SUITE_JOBS)]


def test_a_tracker_searches_its_own_store_after_another_tracker_was_made(store, tmp_path):
    """mlflow.search_runs reads MLflow's global URI, which every Tracker sets: each search resets it."""
    uri, _, tracker = store
    other = tmp_path / "emptied.db"
    with sqlite3.connect(uri[len("sqlite:///") :]) as src, sqlite3.connect(other) as dst:
        src.backup(dst)
    with sqlite3.connect(other) as con:
        con.execute("UPDATE runs SET lifecycle_stage = 'deleted'")
    Tracker(f"sqlite:///{other}")
    for experiment in (None, "exp-a"):
        assert len(tracker.runs(experiment, JOB)) == len(open_reader(uri).runs(experiment, JOB)) > 0

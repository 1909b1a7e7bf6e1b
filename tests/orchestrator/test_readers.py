"""status / compare / report read what a run recorded (the parent run's suite_jobs.json and the job runs),
by suite file, experiment name or parent run id, and never expand the suite (the file may be gone)."""

import json

import pytest
from typer.testing import CliRunner

from orchestrator import api
from orchestrator.cli import app
from orchestrator.readers import recorded
from orchestrator.runs.outcomes import Completion
from orchestrator.runs.tracking import Tracker
from orchestrator.suites import expansion
from orchestrator.suites.spec import JobSpec
from results import names

GROUP = "tiny/base/s0"
# family -> (params_active, params_total, planned active_rel_err, planned total_rel_err, tokens/s)
JOBS = {
    "dense": (100, 100, 0.0, None, 50.0),
    "l3": (110, 400, 0.1, None, 40.0),
    "moe": (99, 420, -0.01, 0.05, 30.0),
}


def job(family: str, kind: str = "train") -> JobSpec:
    active, total, a_err, t_err, _ = JOBS[family]
    match = {"params_active": active, "params_total": total, "active_rel_err": a_err}
    match |= {} if t_err is None else {"total_rel_err": t_err}
    labels = {"family": family, "preset": "tiny", "variant": "base", "seed": "0", "group": GROUP}
    return JobSpec(
        f"{kind}/{family}/tiny/base/s0",
        kind,
        None,
        {"kind": kind},
        f"fp-{kind}-{family}",
        labels,
        match=match,
    )


def result(family: str) -> str:
    active, total, *_, tokens = JOBS[family]
    # measured params: MoE ends 2% above its planned total (so measured total_err = 462/440 - 1 = 0.05)
    measured_total = {"dense": 100, "l3": 440, "moe": 462}[family]
    metrics = {
        names.TRAIN_TOKENS_PER_S: tokens,
        names.PARAMS_ACTIVE: active,
        names.PARAMS_TOTAL: measured_total,
    }
    return json.dumps({"metrics": metrics, "params": {}, "info": {}})


@pytest.fixture
def store(tmp_path):
    """A suite file and a store holding one invocation of it: dense and l3 finished, moe failed, and a
    fourth recorded job that never ran."""
    suite = tmp_path / "recorded.yaml"
    suite.write_text("experiment: exp-recorded\nmatrix: {jobs: [dummy]}\n")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri)
    jobs = [job("dense"), job("l3"), job("moe"), job("dense", "infer")]
    parent = tracker.start_suite("exp-recorded", "recorded", {})
    tracker.log_text(parent, recorded.jobs_json(jobs), names.SUITE_JOBS)
    for spec in jobs[:3]:
        run = tracker.start_job("exp-recorded", parent, spec, 1, {names.TAG_SUITE: "recorded"})
        if spec.labels["family"] == "moe":
            done = Completion(spec.name, 1, "failed", error="RuntimeError: boom")
        else:
            done = Completion(spec.name, 1, "finished", result_json=result(spec.labels["family"]))
        tracker.finish_job(run, spec.fingerprint, "exp-recorded", done)
    tracker.end_suite(parent, "FAILED")
    return suite, uri, parent


def refuse_expansion(monkeypatch):
    def no(*args, **kwargs):
        raise AssertionError("a reader expanded the suite")

    monkeypatch.setattr(expansion, "load_suite", no)


def test_compare_reads_the_recorded_jobs_by_suite_experiment_or_run_id(store, monkeypatch):
    suite, uri, parent = store
    refuse_expansion(monkeypatch)
    by_file = api.compare(str(suite), uri)
    suite.unlink()  # the suite file is not needed: the experiment name or the run id finds the record
    for target in ("exp-recorded", parent, parent[:8]):
        assert by_file.equals(api.compare(target, uri)), target
    rows = by_file.set_index("job", drop=False)
    assert list(by_file["family"]) == ["dense", "l3", "moe", "dense"]
    dense, l3 = by_file.iloc[0], by_file.iloc[1]
    assert (dense["status"], dense["tokens_per_s"], dense["numbers"]) == ("finished", 50.0, "measured")
    assert l3["active_err"] == pytest.approx(0.1) and l3["numbers"] == "measured"  # 110 / 100 - 1
    moe = by_file.iloc[2]  # failed: its state and error, and the planned errors
    assert (moe["status"], moe["error"], moe["numbers"]) == ("failed", "RuntimeError: boom", "planned")
    assert (moe["active_err"], moe["total_err"], moe["match_err"]) == (-0.01, 0.05, 0.05)
    never = by_file.iloc[3]
    assert (never["job"], never["status"], never["active"]) == ("infer", "not run", 100)
    assert len(rows) == 4


def test_a_parent_run_without_suite_jobs_json_falls_back_to_its_job_runs(store, monkeypatch):
    suite, uri, parent = store
    monkeypatch.setattr(names, "SUITE_JOBS", "missing.json")
    table = api.compare("exp-recorded", uri)
    assert list(table["family"]) == ["dense", "l3", "moe"]  # the never-run job is not in the runs
    assert table.iloc[2]["total_err"] == 0.05  # planned, from the run's match/ metrics


def test_status_and_report_by_experiment_name(store, tmp_path, monkeypatch):
    _, uri, parent = store
    refuse_expansion(monkeypatch)
    suites, jobs = api.status("exp-recorded", uri)
    assert list(suites["run_id"]) == [parent[:8]] and list(suites[["ran", "finished", "failed"]].iloc[0]) == [
        3,
        2,
        1,
    ]
    assert list(jobs["job"]) == [
        "train/dense/tiny/base/s0",
        "train/l3/tiny/base/s0",
        "train/moe/tiny/base/s0",
    ]
    done = api.report("exp-recorded", tracking_uri=uri, out_dir=str(tmp_path / "r"), figures=False)
    assert done.parent_run_id == parent and done.n_runs == 3


def test_an_unknown_target_is_a_clear_error(store):
    _, uri, _ = store
    result = CliRunner().invoke(app, ["compare", "no-such-thing", "--tracking-uri", uri])
    assert result.exit_code == 2
    assert "no-such-thing" in result.output
    assert "no suite file, experiment or suite run of that name" in result.output


def test_the_newest_invocation_is_the_one_read(store):
    _, uri, first = store
    tracker = Tracker(uri)
    again = tracker.start_suite("exp-recorded", "recorded", {})  # a rerun of the dense job alone (--set)
    tracker.log_text(again, recorded.jobs_json([job("dense")]), names.SUITE_JOBS)
    tracker.end_suite(again, "FINISHED")
    assert list(api.compare("exp-recorded", uri)["family"]) == ["dense"]
    assert len(api.compare(first, uri)) == 4  # an older invocation by its run id


def test_a_model_free_job_shows_no_parameters(tmp_path):
    """A dummy job has no model: validate's table and compare show '-' for its parameters and match
    error, though its group is still sized (the matcher's cheap test case)."""
    from orchestrator.cli import render

    suite = tmp_path / "free.yaml"
    suite.write_text(
        "experiment: exp-free\nmatrix: {jobs: [dummy], families: [dense, l3]}\ndummy: {steps: 1}\n"
    )
    spec = expansion.load_suite(str(suite))
    assert all(j.match.get("params_active") for j in spec.jobs)
    frame = render.jobs_frame(spec)
    assert frame["active"].isna().all() and frame["total"].isna().all() and set(frame["plan"]) == {"-"}
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri)
    parent = tracker.start_suite("exp-free", "free", {})
    tracker.log_text(parent, recorded.jobs_json(spec.jobs), names.SUITE_JOBS)
    for j in spec.jobs:
        run = tracker.start_job("exp-free", parent, j, 1, {names.TAG_SUITE: "free"})
        empty = json.dumps({"metrics": {"dummy/value": 1.0}, "params": {}, "info": {}})
        tracker.finish_job(
            run, j.fingerprint, "exp-free", Completion(j.name, 1, "finished", result_json=empty)
        )
    tracker.end_suite(parent, "FINISHED")
    table = api.compare(parent, tracking_uri=uri)
    assert len(table) == 2 and table["active"].isna().all() and table["total"].isna().all()
    assert table["match_err"].isna().all()

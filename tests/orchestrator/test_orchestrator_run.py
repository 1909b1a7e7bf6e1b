"""Dummy suites through a real local Ray cluster (one per module) and a tmp sqlite MLflow store: results
read back with mlflow.search_runs, failure classes, infra retries, resume after Ctrl-C, compare."""

import json
import os
import re
import socket
import subprocess
import textwrap
import time
import urllib.error
import urllib.request
from dataclasses import replace
from html.parser import HTMLParser

import mlflow
import pytest
from typer.testing import CliRunner

from orchestrator import api
from orchestrator.cli.main import app
from orchestrator.runs import scheduling
from orchestrator.runs.tracking import Tracker
from orchestrator.suites import registry
from results import names

pytestmark = pytest.mark.ray

SUITE = """
experiment: {experiment}
max_retries: 1
resources:
  dummy: {{num_cpus: 0.5}}
matrix:
  jobs: [dummy]
  presets: [debug]
  variants:
{variants}
dummy: {{steps: 3}}
"""


@pytest.fixture(scope="module", autouse=True)
def ray_cluster():
    os.environ["RAY_AUTH_MODE"] = "disabled"
    scheduling.start(num_cpus=2)
    yield
    scheduling.shutdown()


@pytest.fixture()
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("ISOSPARSE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    return uri


def suite_file(tmp_path, name: str, variants: list[str]) -> str:
    body = "\n".join(f"    - {v}" for v in variants)
    path = tmp_path / f"{name}.yaml"
    path.write_text(textwrap.dedent(SUITE.format(experiment=name, variants=body)))
    return str(path)


def job_runs(experiment: str):
    runs = mlflow.search_runs(experiment_names=[experiment], filter_string="tags.`isosparse.kind` = 'job'")
    return runs.set_index("tags.isosparse.job") if not runs.empty else runs


def artifacts(run_id: str) -> set[str]:
    return {a.path for a in mlflow.MlflowClient().list_artifacts(run_id)}


def test_failures_are_classified_and_recorded_while_others_finish(tmp_path, store):
    crash = tmp_path / "crashed-once"
    path = suite_file(tmp_path, "mixed", [
        "{name: ok, dummy: {value: 1}}",
        "{name: boom, dummy: {value: 2, fail_at_step: 1}}",
        f"{{name: crash, dummy: {{value: 3, crash_marker: '{crash}'}}}}",
    ])  # fmt: skip
    result = CliRunner().invoke(app, ["run", path, "--tracking-uri", store])
    assert result.exit_code == 1, result.output
    runs = job_runs("mixed")
    ok, boom = runs.loc["dummy/dense/debug/ok/s0"], runs.loc["dummy/dense/debug/boom/s0"]
    assert ok["status"] == "FINISHED" and ok["metrics.dummy/value"] == 1.0
    assert ok["params.job.steps"] == "3" and ok["tags.isosparse.family"] == "dense"
    assert ok["tags.isosparse.fingerprint"] and ok["tags.isosparse.ray_node"]
    assert artifacts(ok["run_id"]) == {"config.yaml", "result.json"}
    history = mlflow.MlflowClient().get_metric_history(ok["run_id"], "train/loss")
    assert [m.step for m in history][:3] == [0, 1, 2]  # streamed per step from the worker
    assert boom["status"] == "FAILED" and boom["tags.isosparse.outcome"] == "failed"
    assert "traceback.txt" in artifacts(boom["run_id"])
    tb = Tracker(store).download_text(boom["run_id"], "traceback.txt")
    assert "RuntimeError" in tb and "\x1b[" not in tb  # no terminal colour codes in the artifact
    # the killed worker: attempt 1 is infra (FAILED), attempt 2 the one FINISHED run of that fingerprint
    crashed = runs.loc[["dummy/dense/debug/crash/s0"]].sort_values("tags.isosparse.attempt")
    assert list(crashed["tags.isosparse.outcome"]) == ["infra", "finished"]
    assert list(crashed["status"]) == ["FAILED", "FINISHED"]
    # the infra error shows once, on the retry line, not again when attempt 2 runs
    crash_lines = [line for line in result.output.splitlines() if "crash/s0:" in line]
    retry = [line for line in crash_lines if "retrying after infra" in line]
    assert len(retry) == 1 and "(attempt 2)" in retry[0], crash_lines
    assert all("Error" not in line for line in crash_lines if ": running (attempt 2)" in line)
    # compare prints the expected columns
    table = CliRunner().invoke(app, ["compare", path, "--tracking-uri", store])
    assert table.exit_code == 0
    for column in ("job", "active", "total", "tok/s", "state"):
        assert column in table.output, column
    # model-free (dummy) jobs have no parameters and no match: '-' cells, and the empty columns left out
    assert "val loss" not in table.output and "match err" not in table.output
    assert re.search(r"dummy dense debug ok\s+-\s+-\s+-\s+finished", table.output), table.output
    assert "dummy dense debug boom: RuntimeError: dummy job failing on request at step 1" in table.output
    wide = CliRunner().invoke(app, ["compare", path, "--tracking-uri", store, "--wide"])
    for column in ("family", "sparsity", "val_loss", "val_ppl", "tokens_per_s", "peak_mem", "error"):
        assert column in wide.output, column


def test_out_of_memory_is_classified_oom_and_not_retried_blindly(tmp_path, store):
    big = "{name: big, dummy: {value: 1, fail_at_step: 1, error: MemoryError}}"
    path = suite_file(tmp_path, "oom", [big])
    report = api.run_suite(path, tracking_uri=store)  # max_retries: 1, on_oom: fail (the default)
    job = report.jobs["dummy/dense/debug/big/s0"]
    assert job.state == "oom" and job.attempt == 1 and job.error.startswith("MemoryError")
    runs = job_runs("oom")
    assert len(runs) == 1 and runs["tags.isosparse.outcome"].iloc[0] == "oom"
    # on_oom: halve_batch retries only what has a micro-batch to halve: the dummy job has none
    again = api.run_suite(path, ["on_oom=halve_batch", "experiment=oom2"], tracking_uri=store)
    assert again.jobs["dummy/dense/debug/big/s0"].attempt == 1


def test_rerun_after_interruption_runs_only_what_did_not_finish(tmp_path, store):
    path = suite_file(
        tmp_path,
        "resume",
        [
            "{name: fast, dummy: {value: 1}}",
            "{name: slow, dummy: {steps: 100000, sleep_s: 0.1}}",
        ],  # never ends by itself
    )

    def interrupt_once_fast_finished(report):  # and slow runs (on a loaded box it may start late)
        jobs = report.jobs
        if jobs["dummy/dense/debug/fast/s0"].state == "finished" and jobs["dummy/dense/debug/slow/s0"].run_id:
            raise KeyboardInterrupt

    first = api.run_suite(path, tracking_uri=store, on_tick=interrupt_once_fast_finished)
    assert first.cancelled and first.exit_code == 130
    assert first.jobs["dummy/dense/debug/slow/s0"].state == "cancelled"
    runs = job_runs("resume")
    assert set(runs["status"]) <= {"FINISHED", "KILLED"} and "RUNNING" not in set(runs["status"])
    second = api.run_suite(path, ["matrix.variants.1.dummy.steps=2"], tracking_uri=store)
    assert second.exit_code == 0
    assert second.jobs["dummy/dense/debug/fast/s0"].state == "skipped"
    third = api.run_suite(path, ["matrix.variants.1.dummy.steps=2"], tracking_uri=store)
    assert {j.state for j in third.jobs.values()} == {"skipped"}
    finished = job_runs("resume").query("status == 'FINISHED'")
    assert finished["tags.isosparse.fingerprint"].is_unique and len(finished) == 2
    # status: experiment names, skipped counts, and the results the all-skipped rerun stands on
    suites, jobs = api.status(path, store)
    assert list(suites["experiment"]) == ["resume"] * 3
    assert [tuple(r) for r in suites[["ran", "finished", "failed", "skipped"]].itertuples(index=False)] == [
        (0, 0, 0, 2), (1, 1, 0, 1), (2, 1, 1, 0)]  # fmt: skip
    assert suites["run_id"].iloc[0] == third.parent_run_id[:8]
    assert list(jobs["job"]) == ["dummy/dense/debug/fast/s0", "dummy/dense/debug/slow/s0"]
    assert set(jobs["state"]) == {"finished"}
    assert mlflow.get_run(third.parent_run_id).info.run_name == "resume (rerun: all 2 jobs skipped)"
    shown = CliRunner().invoke(app, ["status", third.parent_run_id[:8], "--tracking-uri", store])
    assert shown.exit_code == 0 and "current results of resume" in shown.output, shown.output


def test_run_writes_the_report_onto_the_parent_run_and_report_rebuilds_it(tmp_path, store):
    path = suite_file(tmp_path, "reported", ["{name: a, dummy: {value: 1}}", "{name: b, dummy: {value: 2}}"])
    done = api.run_suite(path, tracking_uri=store)
    assert done.exit_code == 0 and done.report_error is None, done.report_error
    assert done.report.parent_run_id == done.parent_run_id and done.report.n_runs == 2
    client = mlflow.MlflowClient()
    logged = {a.path for a in client.list_artifacts(done.parent_run_id, "report")}
    assert {"report/report.html", "report/report.md", "report/figures"} <= logged
    figures = client.list_artifacts(done.parent_run_id, "report/figures")
    assert figures and all(f.file_size > 0 for f in figures)
    with pytest.raises(FileNotFoundError, match="no artifact 'result.json'"):  # what the report skips
        Tracker(store).download_text(done.parent_run_id, "result.json")

    out = tmp_path / "again"
    result = CliRunner().invoke(app, ["report", path, "--tracking-uri", store, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "2 job runs" in result.output and done.parent_run_id in result.output
    page = (out / "report.html").read_text()
    parser = _Tags()
    parser.feed(page)  # well-formed enough for a browser's parser: every figure is an embedded PNG
    assert parser.tags["html"] == 1 and parser.tags["img"] == len(figures) > 0
    assert "# isosparse report: reported" in (out / "report.md").read_text()
    assert all(p.stat().st_size > 0 for p in (out / "figures").iterdir())


def _get(url: str, deadline_s: float = 90.0) -> bytes:
    """GET url, retrying while the server starts."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=60) as response:  # a loaded box answers slowly
                return response.read()
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_ui_serves_the_experiment_and_the_report_artifact(tmp_path, store):
    path = suite_file(tmp_path, "served", ["{name: a, dummy: {value: 1}}"])
    done = api.run_suite(path, tracking_uri=store)
    assert done.exit_code == 0 and done.report is not None, done.report_error
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url, landing, proc = api.ui(store, port)
    try:
        assert url == f"http://127.0.0.1:{port}"
        experiment = mlflow.get_experiment_by_name("served")
        assert landing == f"{url}/#/experiments/{experiment.experiment_id}?workflowType=machine_learning"
        assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
        assert _get(f"{url}/health", deadline_s=0) == b"OK"  # up when ui() returns (one try, slow or not)
        found = json.loads(_get(f"{url}/api/2.0/mlflow/experiments/get-by-name?experiment_name=served"))
        assert found["experiment"]["name"] == "served"
        listed = json.loads(
            _get(f"{url}/api/2.0/mlflow/artifacts/list?run_id={done.parent_run_id}&path=report")
        )
        assert {"report/report.html", "report/report.md"} <= {f["path"] for f in listed["files"]}
        page = _get(f"{url}/get-artifact?path=report/report.html&run_uuid={done.parent_run_id}").decode()
        assert page.startswith("<!DOCTYPE html>") and "isosparse report: served" in page
        assert b"<html" in _get(url)  # the dashboard itself
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:  # a loaded machine: its workers are slow to stop
            proc.kill()
            proc.wait()


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: dict[str, int] = {}

    def handle_starttag(self, tag, attrs):
        self.tags[tag] = self.tags.get(tag, 0) + 1
        if tag == "img":
            assert dict(attrs)["src"].startswith("data:image/png;base64,")


@pytest.mark.slow
def test_multi_worker_job_runs_as_a_torch_trainer_gang(tmp_path, store):
    path = suite_file(tmp_path, "gang", ["{name: two, dummy: {value: 7}}"])
    sets = ["resources.dummy.num_workers=2", "resources.dummy.placement=STRICT_PACK"]
    report = api.run_suite(path, sets, tracking_uri=store)
    assert report.exit_code == 0, report.jobs
    run = job_runs("gang").loc["dummy/dense/debug/two/s0"]
    assert run["status"] == "FINISHED" and run["metrics.dummy/value"] == 7.0  # rank 0's result
    losses = mlflow.MlflowClient().get_metric_history(run["run_id"], "train/loss")
    steps = [m.step for m in losses]
    assert steps.count(0) == 1 and steps.count(1) == 1  # streamed by rank 0 only, not once per rank


def test_fresh_process_kinds_run_in_a_new_worker(tmp_path, store, monkeypatch):
    """Each job asks for both CPUs, so they run one after another: without max_calls=1 Ray hands the next
    job the idle worker of the last one (one pid for all); a fresh-process kind's worker exits after it."""
    monkeypatch.setitem(registry.JOBS, "dummy", replace(registry.JOBS["dummy"], fresh_process=True))
    path = suite_file(tmp_path, "fresh", [f"{{name: v{i}, dummy: {{value: {i}}}}}" for i in range(3)])
    report = api.run_suite(path, ["resources.dummy.num_cpus=2"], tracking_uri=store)
    assert report.exit_code == 0, report.jobs
    runs = job_runs("fresh")
    pids = runs[f"tags.{names.TAG_INFO_PREFIX}pid"]
    assert len(runs) == 3 and pids.is_unique, pids

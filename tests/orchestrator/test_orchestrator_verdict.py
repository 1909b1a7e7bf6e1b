"""`isosparse compare` on a store with three seeds: the seeds table (mean ± sd, paired Δ vs dense, 95% t
interval) and the verdict, from the finished train runs of the suite's current jobs only."""

import textwrap

import mlflow
import pytest
from rich.console import Console
from typer.testing import CliRunner

from orchestrator import api
from orchestrator.cli import app, render
from orchestrator.readers import recorded
from orchestrator.runs.tracking import Tracker
from orchestrator.suites.expansion import load_suite
from results import names

SUITE = """
experiment: verdict-test
train:
  data: {source: {kind: builtin, content: docs}}
  seq_len: 32
  batch_size: 2
  steps: 2
matrix:
  families: [dense, l3, moe]
  presets: [debug]
  jobs: [train]
  seeds: [0, 1, 2]
"""
# val loss per family and seed: L3 − dense = −0.06/−0.07/−0.08 (real), MoE − dense = +0.01/−0.03/−0.01
LOSS = {"dense": (4.20, 4.21, 4.24), "l3": (4.14, 4.14, 4.16), "moe": (4.21, 4.18, 4.23)}


@pytest.fixture()
def logged(tmp_path, monkeypatch):
    monkeypatch.setenv("ISOSPARSE_HOME", str(tmp_path / "home"))
    path = tmp_path / "verdict.yaml"
    path.write_text(textwrap.dedent(SUITE))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.tracking.MlflowClient(uri)
    exp = client.create_experiment("verdict-test", artifact_location=(tmp_path / "art").as_uri())
    jobs = load_suite(str(path)).jobs
    stale = jobs[1]  # an older config of the L3 seed-0 job: a wild loss that must not count
    for job, fingerprint, loss in [*((j, j.fingerprint, None) for j in jobs), (stale, "old", 9.0)]:
        tags = {names.TAG_RUN_TYPE: names.RUN_TYPE_JOB, names.TAG_JOB: job.name, names.TAG_JOB_KIND: "train",
                names.TAG_FINGERPRINT: fingerprint, names.TAG_OUTCOME: "finished",
                names.TAG_INFO_HARDWARE: "cpu"}  # fmt: skip
        tags |= {names.label_tag(k): str(v) for k, v in job.labels.items()}
        rid = client.create_run(exp, tags=tags).info.run_id
        value = loss if loss is not None else LOSS[job.labels["family"]][int(job.labels["seed"])]
        client.log_metric(rid, names.EVAL_VAL_LOSS, value)
        client.set_terminated(rid, "FINISHED")
    tracker = Tracker(uri)  # the parent run records the jobs, as `run` does: what the readers read
    parent = tracker.start_suite("verdict-test", "verdict", {})
    tracker.log_text(parent, recorded.jobs_json(jobs), names.SUITE_JOBS)
    tracker.end_suite(parent, "FINISHED")
    return str(path), uri


def test_verdict_and_seeds_table_from_the_store(logged):
    path, uri = logged
    lines, table = api.verdict(path, tracking_uri=uri)
    assert lines == ["L3 < MoE < dense (MoE vs dense within noise)",
                     "MoE keeps 14% of L3's gain over dense (its gap to dense is within noise)"]  # fmt: skip
    l3 = table[table["config"].eq("L3")].iloc[0]
    assert (l3["seeds"], l3["val loss"], l3["95% interval"]) == (3, "4.147 ± 0.012", "[-0.095, -0.045]")
    out = Console(width=80, record=True)
    render.print_verdict(out, lines, table)
    text = out.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "verdict: L3 < MoE < dense (MoE vs dense within noise)" in text and "within noise" in text
    result = CliRunner().invoke(app, ["compare", path, "--tracking-uri", uri])
    assert result.exit_code == 0, result.output
    assert "[-0.095, -0.045]" in result.output and "verdict: L3 < MoE < dense" in result.output

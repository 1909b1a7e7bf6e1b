"""An eval suite through a real local Ray cluster and a tmp sqlite store: each eval job runs after its
train job on that job's final weights and logs its accuracy; a train job that fails cancels its eval."""

import json
import os
import textwrap

import mlflow
import pytest

from orchestrator import api
from orchestrator.runs import scheduling
from results import names

pytestmark = [pytest.mark.ray, pytest.mark.slow]

SUITE = """
experiment: evalrun
matrix:
  jobs: [eval, train]
  families: [dense]
  presets: [debug]
  variants: [{name: ok}, {name: big, train: {batch_size: 100000}}]   # big: more windows than the data
model: {overrides: {vocab_size: 512}}
train:
  {steps: 2, batch_size: 2, seq_len: 32, data: {source: {kind: builtin, content: docs}, max_documents: 60}}
eval: {tasks: [{name: mc, path: mc.jsonl}], batch_size: 4}
"""


@pytest.fixture(scope="module", autouse=True)
def ray_cluster():
    os.environ["RAY_AUTH_MODE"] = "disabled"
    scheduling.start(num_cpus=2)
    yield
    scheduling.shutdown()


def test_eval_runs_after_its_train_job_and_is_cancelled_when_it_fails(tmp_path, monkeypatch):
    monkeypatch.setenv("ISOSPARSE_HOME", str(tmp_path / "home"))
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    rows = [{"question": "import", "choices": [" os", " zz"], "answer": 0}] * 3
    (tmp_path / "mc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))  # next to the suite
    path = tmp_path / "evalrun.yaml"
    path.write_text(textwrap.dedent(SUITE))
    report = api.run_suite(str(path), tracking_uri=store, make_report=False)
    states = {name: job.state for name, job in report.jobs.items()}
    assert states == {
        "train/dense/debug/ok/s0": "finished", "eval/dense/debug/ok/s0": "finished",
        "train/dense/debug/big/s0": "failed", "eval/dense/debug/big/s0": "cancelled",
    }  # fmt: skip
    mlflow.set_tracking_uri(store)
    runs = mlflow.search_runs(experiment_names=["evalrun"]).set_index("tags.isosparse.job")
    ok, train = runs.loc["eval/dense/debug/ok/s0"], runs.loc["train/dense/debug/ok/s0"]
    assert ok["status"] == "FINISHED" and ok["start_time"] >= train["end_time"]  # after its train job
    assert 0 <= ok[f"metrics.{names.lm_eval_key('mc', 'acc')}"] <= 1
    assert ok["tags.isosparse.info.weights"].endswith("final-model.pt")
    blocked = runs.loc["eval/dense/debug/big/s0"]
    assert blocked["status"] == "KILLED" and blocked["tags.isosparse.outcome"] == "cancelled"
    assert blocked["tags.isosparse.error"] == "cancelled: train/dense/debug/big/s0 ended failed"
    inputs = mlflow.MlflowClient().get_run(ok["run_id"]).inputs.dataset_inputs
    assert sorted(d.dataset.name for d in inputs) == ["builtin-train", "mc"]

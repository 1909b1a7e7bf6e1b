"""Eval jobs in a suite: each runs after its group's train job on that job's final weights and data; the
datasets a job names reach MLflow as dataset inputs (metadata only, with their content digests)."""

import json
import textwrap

import pytest

from orchestrator.runs.tracking import Tracker
from orchestrator.suites.expansion import SuiteError, load_suite
from results import names

SUITE = """
experiment: evals
matrix: {jobs: [eval, train], families: [dense, l3], presets: [debug], variants: [{name: base}, VARIANT]}
model: {overrides: {vocab_size: 512}}
train: {steps: 2, batch_size: 2, seq_len: 32, data: {source: {kind: builtin, content: docs},
        max_documents: 60}}
eval: {tasks: [{name: mc, path: PATH}], batch_size: 4}
"""


def _suite(tmp_path, variant="{name: cap, model: {overrides: {l3_cap: 8}}}", **replace):
    text = SUITE.replace("VARIANT", variant).replace("PATH", str(tmp_path / "mc.jsonl"))
    for old, new in replace.items():
        text = text.replace(old, new)
    (tmp_path / "mc.jsonl").write_text('{"question": "q", "choices": ["a", "b"], "answer": 0}\n')
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_each_eval_job_runs_after_its_train_job_on_its_data(tmp_path):
    suite = load_suite(_suite(tmp_path))
    jobs = {job.name: job for job in suite.jobs}
    trains = {n: j for n, j in jobs.items() if j.kind == "train"}
    evals = {n: j for n, j in jobs.items() if j.kind == "eval"}
    # the dense model is the same in both variants (its train job kept once, so its eval too)
    assert sorted(evals) == ["eval/dense/debug/base/s0", "eval/l3/debug/base/s0", "eval/l3/debug/cap/s0"]
    assert sorted(trains) == [n.replace("eval/", "train/") for n in sorted(evals)]
    for name, job in evals.items():
        train = jobs[name.replace("eval/", "train/", 1)]
        assert job.after == train.fingerprint == job.resolved["after"]
        assert job.config.data == train.config.data_config()  # the corpus, tokenizer and windows trained on
        assert job.config.model.l3 == train.config.model.l3 and job.config.model.dim == train.config.model.dim
    assert all(job.config.save_weights for job in trains.values())
    checkpointing = load_suite(_suite(tmp_path, **{"steps: 2,": "steps: 2, checkpoint_every: 1,"})).jobs
    assert not any(j.config.save_weights for j in checkpointing if j.kind == "train")  # its last step serves


def test_an_eval_fingerprint_follows_its_train_job(tmp_path):
    base = {j.name: j for j in load_suite(_suite(tmp_path)).jobs}
    lr = {j.name: j for j in load_suite(_suite(tmp_path, **{"steps: 2,": "steps: 2, lr: 0.01,"})).jobs}
    name = "eval/l3/debug/base/s0"
    assert base[name].config == lr[name].config  # the same evaluation ...
    assert base[name].fingerprint != lr[name].fingerprint  # ... of other weights


def test_eval_without_train_or_with_its_own_data_is_refused(tmp_path):
    with pytest.raises(SuiteError, match=r"matrix.jobs: an eval job evaluates its group's train job"):
        load_suite(_suite(tmp_path, **{"jobs: [eval, train]": "jobs: [eval]"}))
    with pytest.raises(SuiteError, match=r"eval.data: the eval job evaluates on the train job's data"):
        load_suite(_suite(tmp_path, **{"batch_size: 4}": "batch_size: 4, data: {max_documents: 10}}"}))
    with pytest.raises(SuiteError, match=r"eval.tasks\[0\]: EvalTask.path must end in one of"):
        load_suite(_suite(tmp_path, **{"mc.jsonl": "mc.csv"}))
    with pytest.raises(SuiteError, match=r"eval.tasks\[0\].path: no such file: '.*/none.jsonl'"):
        load_suite(_suite(tmp_path, **{"mc.jsonl": "none.jsonl"}))


def test_datasets_become_mlflow_dataset_inputs(tmp_path):
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = tracker.experiment_id("inputs")
    run_id = tracker.client.create_run(exp).info.run_id
    datasets = [
        {"name": "builtin-train", "digest": "a" * 64, "context": "training", "source": "BuiltinSource()"},
        {"name": "mc", "digest": "b" * 64, "context": "eval", "source": "/x/mc.jsonl", "n_docs": 4},
    ]
    info = {names.INFO_DATASETS: json.dumps(datasets), names.INFO_LM_EVAL_RESULTS: '{"mc": {"acc,none": 1}}',
            "family": "l3"}  # fmt: skip
    result = {"kind": "eval", "metrics": {"lm_eval/mc/acc": 0.5}, "info": info}
    tracker._log_result(run_id, json.dumps(result), 0)
    run = tracker.client.get_run(run_id)
    got = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert sorted(got) == ["builtin-train", "mc"]
    assert got["mc"].dataset.digest == "b" * names.DATASET_DIGEST_CHARS
    assert json.loads(got["mc"].dataset.source)["tags"] == {
        "context": "eval",
        "source": "/x/mc.jsonl",
        "n_docs": "4",
    }
    assert [(t.key, t.value) for t in got["builtin-train"].tags] == [("mlflow.data.context", "training")]
    assert (
        run.data.metrics["lm_eval/mc/acc"] == 0.5 and run.data.tags[names.TAG_INFO_PREFIX + "family"] == "l3"
    )
    assert names.TAG_INFO_PREFIX + names.INFO_DATASETS not in run.data.tags  # inputs, not a cut tag
    assert json.loads(tracker.download_text(run_id, "lm_eval_results.json")) == {"mc": {"acc,none": 1}}

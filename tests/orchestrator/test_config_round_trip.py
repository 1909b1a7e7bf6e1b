"""The resolved job config → MLflow params (a real sqlite store) → the `results` frame and back: the values
the worker was shipped are the values the tables read, and the params alone rebuild the exact config."""

import textwrap

import yaml

from orchestrator.runs.tracking import Tracker
from orchestrator.suites.expansion import load_suite
from orchestrator.suites.schema import validate
from results import load, names
from workloads.jobs.train import TrainJobConfig

SUITE = """
experiment: roundtrip
matrix: {jobs: [train], families: [dense, l3, moe], presets: [debug]}
model: {overrides: {l3_cap: 64, l3_tied: true, l3_allocation: uniform}}
train: {steps: 3, batch_size: 2, data: {source: {kind: builtin, content: docs}, max_documents: 300}}
"""


def _unflatten(params: dict[str, str]) -> dict:
    """MLflow's flat string params (tracking.flatten) → nested plain data ("None" is Python's None)."""
    out: dict = {}
    for key, text in params.items():
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = None if text == "None" else yaml.safe_load(text)
    return out


def test_resolved_config_round_trips_through_mlflow(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent(SUITE))
    suite = load_suite(path)
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    parent = tracker.start_suite(suite.experiment, suite.name, {})
    run_ids = {tracker.start_job(suite.experiment, parent, job, 1, {}): job for job in suite.jobs}
    tracker.end_suite(parent, "FINISHED")
    raw = tracker.search(suite.experiment)
    frame = load.runs_from_mlflow(raw).set_index("run_id")
    for run_id, job in run_ids.items():
        row, model = frame.loc[run_id], job.config.model
        assert row["family"] == model.family == job.labels["family"]
        if model.l3 is not None:
            assert int(row["l3_cap"]) == model.l3.cap == 64
            assert (row["l3_allocation"], bool(row["l3_tied"])) == ("uniform", True)
            assert row["l3_positions"] == ",".join(map(str, model.l3.positions))
        if model.moe is not None:
            assert int(row["moe_top_k"]) == model.moe.top_k
            assert int(row["moe_num_experts"]) == model.moe.num_experts
        params = raw.set_index("run_id").loc[run_id]
        prefix = names.param_column(names.PARAM_JOB + ".")
        flat = {k.removeprefix(names.param_column("")): v for k, v in params.items()
                if k.startswith(prefix) and isinstance(v, str)}  # fmt: skip
        rebuilt, errors = validate(TrainJobConfig, _unflatten(flat)[names.PARAM_JOB])
        assert errors == [] and rebuilt == job.config  # the params are the whole shipped config

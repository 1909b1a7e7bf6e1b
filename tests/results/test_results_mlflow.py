"""results.load on a real `mlflow.search_runs` frame (sqlite store in tmp): runs logged with the names of
`results.names` in the orchestrator's layout (parent suite run, nested job runs) load and report correctly.

mlflow is used by the test only, to produce the frame; `results/` itself never imports it.
"""

import pytest

from results import analysis, load, names, report

mlflow = pytest.importorskip("mlflow")


def _log_suite(client, exp_id: str) -> str:
    parent = client.create_run(
        exp_id, tags={names.TAG_RUN_TYPE: names.RUN_TYPE_SUITE, names.TAG_SUITE: "mini"}
    )
    pid = parent.info.run_id
    for family, loss, tok_s in (("dense", 3.0, 1000.0), ("l3", 2.8, 900.0), ("moe", 2.9, 600.0)):
        for seed in (0, 1):
            tags = {
                names.TAG_PARENT_RUN: pid,
                names.TAG_RUN_TYPE: names.RUN_TYPE_JOB,
                names.TAG_JOB_KIND: "train",
                names.TAG_FAMILY: family,
                names.TAG_PRESET: "debug",
                names.TAG_VARIANT: "base",
                names.TAG_GROUP: f"debug/base/s{seed}",
                names.TAG_SEED: str(seed),
                names.TAG_OUTCOME: "finished",
                names.TAG_INFO_HARDWARE: "cpu",
            }
            rid = client.create_run(exp_id, tags=tags).info.run_id
            if family == "l3":
                client.log_param(rid, names.PARAM_L3_CAP, "512")
                client.log_param(rid, names.PARAM_L3_POSITIONS, "[1, 2]")
            active, total = 1000.0, (1000.0 if family == "dense" else 4000.0)
            for step in range(3):
                client.log_metric(rid, names.TRAIN_LOSS, loss + 1.0 / (step + 1), step=step)
            metrics = {
                names.EVAL_VAL_LOSS: loss + 0.01 * seed,
                names.TRAIN_TOKENS_PER_S: tok_s,
                names.PARAMS_ACTIVE: active,
                names.PARAMS_TOTAL: total,
                names.MATCH_ACTIVE_REL_ERR: 0.0 if family == "dense" else 0.01,
            }
            for key, value in metrics.items():
                client.log_metric(rid, key, value, step=0)
            client.set_terminated(rid, "FINISHED")
    client.set_terminated(pid, "FINISHED")
    return pid


@pytest.mark.slow
def test_real_search_runs_frame_loads_and_reports(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.tracking.MlflowClient(uri)
    exp_id = client.create_experiment("mini", artifact_location=(tmp_path / "art").as_uri())
    _log_suite(client, exp_id)
    mlflow.set_tracking_uri(uri)
    raw = mlflow.search_runs([exp_id], output_format="pandas")
    runs = load.runs_from_mlflow(raw)
    assert len(runs) == 6 and set(runs["suite"]) == {"mini"} and set(runs["group"]) == {"debug/base"}
    assert str(runs["start_time"].dtype) == "datetime64[ns, UTC]" and runs["start_time"].notna().all()
    hist = load.history_from_mlflow(
        {
            rid: {
                names.TRAIN_LOSS: [
                    (m.step, m.value) for m in client.get_metric_history(rid, names.TRAIN_LOSS)
                ]
            }
            for rid in runs["run_id"]
        }
    )
    assert len(hist) == 18
    paths = report.build_report(raw, hist, out_dir=tmp_path / "report")
    md = paths.markdown.read_text()
    assert "# isosparse report: mini" in md and "6 job runs (6 FINISHED)" in md
    t = analysis.iso_sparse_table(runs).set_index("family")
    assert t.loc["l3", "delta_val_loss"] == pytest.approx(-0.2)
    assert t.loc["moe", "tokens_per_s_ratio"] == pytest.approx(0.6)
    assert t.loc["l3", "n_seeds"] == 2 and t.loc["l3", "params_total"] == 4000
    assert any(p.name == "loss_curves.png" for p in paths.figures)

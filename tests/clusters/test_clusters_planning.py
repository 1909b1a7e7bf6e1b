"""orchestrator/planning/plan.py: ModelConfig -> ModelShape agrees with count_params; plans are coherent."""

from dataclasses import replace
from pathlib import Path

import pytest

from clusters import capacity
from orchestrator.planning import plan as planning
from orchestrator.planning.calibration import calibration_frame
from orchestrator.suites.cluster_file import load_cluster
from workloads.models import presets
from workloads.models.accounting import count_params

EXAMPLES = Path(__file__).parents[2] / "clusters" / "examples"


@pytest.mark.parametrize("preset", presets.names())
@pytest.mark.parametrize("family", ["dense", "l3", "moe", "hash_moe"])
def test_shape_matches_count_params(preset, family):
    cfg = presets.get(preset, family)
    shape = planning.model_shape(cfg)
    pc = count_params(cfg)
    assert (shape.params_total, shape.params_active) == (pc.total, pc.flops_active)  # FLOPs: no lookup table
    assert pc.active - pc.flops_active == (0 if cfg.tie_embeddings else cfg.vocab_size * cfg.dim)
    blocks = shape.blocks
    assert sum(b[0] for b in blocks) + cfg.dim == pc.by_category["dense"]  # + final norm
    assert sum(b[1] for b in blocks) == pc.by_category["experts"]
    assert sum(b[2] for b in blocks) == pc.by_category["l3_tables"]
    if shape.l3:
        assert shape.l3.rows_per_token_mean == pytest.approx(cfg.l3.budget / cfg.vocab_size, rel=1e-4)
        assert shape.l3.positions == cfg.l3.positions


@pytest.fixture(scope="module")
def paper_plan():
    shape = planning.model_shape(presets.get("paper-2.6b", "l3"), "paper-2.6b/l3")
    return planning.plan_training(shape, load_cluster(EXAMPLES / "h100x8.yaml"), tokens=30e9)


def test_paper_plan_is_coherent(paper_plan):
    p = paper_plan
    assert p.fits and p.memory.peak <= p.capacity_bytes == 0.9 * 80 * 2**30
    assert p.setup.n_gpus == 8 and 1 <= p.setup.micro_batch <= planning.AUTO_MAX_MICRO_BATCH
    # the chosen micro-batch is the largest that fits (auto), and the next one does not
    assert p.max_micro_batch == p.setup.micro_batch
    assert not capacity.fits(p.model, replace(p.setup, micro_batch=p.setup.micro_batch + 1), p.capacity_bytes)
    # a lower ZeRO stage would not fit at micro-batch 1 (the plan takes the lowest that does)
    if p.setup.zero_stage > 0:
        lower = replace(p.setup, zero_stage=p.setup.zero_stage - 1, micro_batch=1)
        assert not capacity.fits(p.model, lower, p.capacity_bytes)
    assert p.cost.gpu_hours == pytest.approx(p.cost.wall_s / 3600 * 8)
    assert p.cost.dollars == pytest.approx(p.cost.gpu_hours * 2.99)
    assert p.step.tokens_per_s == pytest.approx(p.setup.tokens_per_step / p.step.step_s)
    assert p.min_gpus is not None and p.min_gpus <= 8


def test_cpu_plan_has_no_time_without_calibration():
    shape = planning.model_shape(presets.get("tiny", "dense"))
    plan = planning.plan_training(shape, load_cluster(EXAMPLES / "local.yaml"), tokens=1e6, micro_batch=2)
    if plan.accelerator.name == "cpu":
        assert plan.step is None and plan.fits


def test_plan_suite_flags_jobs_that_do_not_fit(tmp_path):
    small = tmp_path / "one-l40s.yaml"
    small.write_text("name: one\nkind: ray\naddress: auto\nnodes:\n  - {count: 1, accelerator: l40s, "
                     "gpus_per_node: 1, cpus_per_node: 8, memory_gib: 64}\n")  # fmt: skip
    plans = planning.plan_suite("quickstart", load_cluster(small))
    assert plans and all(p.fits for p in plans)
    assert {p.kind for p in plans} >= {"train", "infer"}
    big = planning.plan_suite("iso-sparse-800m", load_cluster(small))
    bad = planning.unfit_jobs(big)
    assert bad and all(p.kind == "train" for p in bad) and "needs 8 GPUs" in bad[0].note


def test_cluster_resources_for_suite_jobs():
    from orchestrator.suites.spec import Resources, cluster_resources

    h100 = load_cluster(EXAMPLES / "h100x8.yaml")
    r = cluster_resources(h100, Resources(num_workers=4, num_gpus=1, placement="STRICT_PACK"))
    assert (r.num_workers, r.num_gpus, r.num_cpus, r.placement) == (4, 1.0, 12.0, "STRICT_PACK")
    ray = load_cluster(EXAMPLES / "ray.yaml")
    assert cluster_resources(ray, Resources()).memory_bytes == 100 * 2**30


def test_calibration_frame_round_trip():
    import pandas as pd

    from clusters.calibration import calibrate

    runs = pd.DataFrame({"preset": ["tiny", "tiny"], "family": ["dense", "l3"], "hardware": ["cpu", "cpu"],
                         "batch_size": [8, 8], "seq_len": [128, 128],
                         "train/tokens_per_s": [5000.0, 4500.0]})  # fmt: skip
    frame = calibration_frame(runs)
    assert (frame["flops_per_token"] > 6 * 4e6).all() and (frame["predicted_peak_bytes"] > 0).all()
    frame["measured_peak_bytes"] = frame["predicted_peak_bytes"] * 1.05
    fit = calibrate(frame).by_hardware["cpu"]
    assert fit.memory_scale == pytest.approx(1.05) and fit.flops_per_s > 0


def _store_with_train_runs(tmp_path, rates: list[float]) -> str:
    """A sqlite store holding FINISHED debug/dense train runs on cpu (as the orchestrator tags them), plus
    a failed one and an infer one that calibration must ignore."""
    mlflow = pytest.importorskip("mlflow")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    exp = client.create_experiment("cal", artifact_location=(tmp_path / "art").as_uri())
    runs = [("train", "FINISHED", r) for r in rates] + [("train", "FAILED", 1.0), ("infer", "FINISHED", 1.0)]
    for kind, status, rate in runs:
        tags = {"isosparse.kind": "job", "isosparse.job_kind": kind, "isosparse.hardware": "cpu",
                "isosparse.preset": "debug", "isosparse.family": "dense"}  # fmt: skip
        rid = client.create_run(exp, tags=tags).info.run_id
        client.log_param(rid, "job.batch_size", "4")
        client.log_param(rid, "job.seq_len", "64")
        client.log_metric(rid, "train/tokens_per_s", rate)
        client.set_terminated(rid, status)
    return uri


def test_calibration_from_the_tracking_store(tmp_path):
    from orchestrator import api

    uri = _store_with_train_runs(tmp_path, [1000.0, 4000.0])
    fitted = api.calibration(uri)
    fit = fitted.by_hardware["cpu"]
    flops = planning.model_shape(presets.get("debug")).train_flops_per_token(64)
    assert fit.n_time_runs == 2 and fit.n_memory_runs == 0  # host RSS is not used for memory
    assert fit.flops_per_s == pytest.approx(2000.0 * flops)  # geometric mean of the two rates
    assert fit.time_error_after == pytest.approx(0.75)  # 2000 vs 1000 and 4000: median of 1.0 and 0.5
    # the CPU catalog has no peak: only a calibration gives a time
    local = load_cluster(EXAMPLES / "local.yaml")
    shape = planning.model_shape(presets.get("debug"))
    assert planning.plan_training(shape, local, tokens=1e6, seq_len=64).step is None
    plan = planning.plan_training(shape, local, tokens=1e6, seq_len=64, micro_batch=4, calibration=fitted)
    assert plan.step.tokens_per_s == pytest.approx(2000.0, rel=1e-6)


def test_calibration_without_runs_is_a_clear_error(tmp_path):
    from orchestrator import api

    with pytest.raises(ValueError, match="no job runs"):
        api.calibration(f"sqlite:///{tmp_path / 'empty.db'}")

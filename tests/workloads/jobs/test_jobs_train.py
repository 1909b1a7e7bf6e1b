"""workloads.jobs.train on CPU: every metric of each family, equivalences, bad inputs, checkpoint resume."""

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from workloads.data import BuiltinSource, DataConfig
from workloads.jobs.loop import Batches
from workloads.jobs.result import JobContext
from workloads.jobs.setup import build_model, prepare_job
from workloads.jobs.spec import ModelOverrides
from workloads.jobs.train import TrainJobConfig, run
from workloads.l3.allocation import save_allocation, uniform_allocate
from workloads.models import accounting

VOCAB = 512
DATA = DataConfig(max_documents=50, val_fraction=0.2)
COMMON = {
    "train/loss", "train/tokens_per_s", "train/step_time_s", "train/step_time_s_p10", "train/step_time_s_p90",
    "mem/peak_host_bytes", "mem/optimizer_bytes", "eval/val_loss", "eval/val_ppl", "eval/val_bpb",
    "data/val_bytes_per_token", "data/replaced_chars",
    "mem/params_bytes/dense", "mem/params_bytes/l3_tables", "mem/params_bytes/experts",
    "mem/params_bytes/embeddings", "params_active", "params_total", "sparsity", "params_active_max",
    "params_active_min",
    "mem/optimizer_bytes/dense", "mem/optimizer_bytes/l3_tables", "mem/optimizer_bytes/experts",
    "mem/optimizer_bytes/embeddings",
}  # fmt: skip
FLOORS = {"train/floor_frac", "probe/read_bytes_per_s", "probe/gemm_flop_per_s"}  # workloads.jobs.floors
# the timed steps' phase (workloads.jobs.contention; psutil is installed here)
TIMING = {"timing/phase_start_s", "timing/phase_end_s", "timing/node_cpus", "timing/threads",
          "timing/load_avg_1m", "timing/other_cpu_cores"}  # fmt: skip
FAMILY_KEYS = {
    "dense": set(),
    "l3": {"lb/l3_rows_per_token_mean", "lb/l3_rows_per_token_max", "lb/l3_unique_rows_per_step",
           "lb/l3_bytes_per_token"} | {f"lb/{k}_step_{s}" for k in (
               "l3_rows_per_token_mean", "l3_bytes_per_token") for s in ("median", "p90", "max")},
    "moe": {"lb/expert_tokens_max_over_mean", "lb/expert_tokens_cv", "lb/dropped_token_frac",
            "lb/dropped_route_frac", "lb/aux_loss"} | {f"lb/{k}_step_{s}" for k in (
                "expert_tokens_max_over_mean", "expert_tokens_cv") for s in ("median", "p90", "max")},
}  # fmt: skip
FAMILY_KEYS["hash_moe"] = FAMILY_KEYS["moe"]  # the same load-balance numbers (no drops, aux loss 0)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    path = tmp_path_factory.getbasetemp() / "jobs-cache"  # shared with the other jobs tests
    path.mkdir(exist_ok=True)
    return str(path)


def resolved(cfg: TrainJobConfig, cache_dir: str):
    """(model config, data) exactly as the job resolves them: data first, then the model matched on it."""
    prepared = prepare_job(cfg.model_spec(), None, cfg.data_config(), cache_dir)
    return prepared.model, prepared.data


def job(family: str, **kw) -> TrainJobConfig:
    overrides = kw.pop("overrides", {})
    base = dict(seq_len=32, batch_size=4, steps=4, eval_batches=2, lr_warmup_steps=1, timing_warmup_steps=1)
    return TrainJobConfig(
        preset=kw.pop("preset", "debug"),
        family=family,
        overrides=ModelOverrides(vocab_size=VOCAB, **overrides),
        data=DATA,
        **(base | kw),
    )


class Recorder:
    def __init__(self, fail_at_step: int | None = None):
        self.steps: list[tuple[int, dict]] = []
        self.fail_at_step = fail_at_step

    def __call__(self, values, step):
        if step == self.fail_at_step and "train/loss" in values:
            raise RuntimeError(f"killed at step {step}")
        self.steps.append((step, dict(values)))

    def losses(self) -> dict[int, float]:
        return {s: v["train/loss"] for s, v in self.steps if "train/loss" in v}


@pytest.mark.parametrize("family", ["dense", "l3", "moe", "hash_moe"])
def test_each_family_reports_every_metric(family, cache_dir):
    rec = Recorder()
    cfg = job(family, log_every=3)
    result = run(cfg, JobContext(cache_dir=cache_dir, peak_flops=1e12, on_metrics=rec))
    assert set(result.metrics) == COMMON | FAMILY_KEYS[family] | {"train/mfu"} | FLOORS | TIMING
    assert result.metrics["train/floor_frac"] > 0 and result.metrics["probe/read_bytes_per_s"] > 0
    assert all(math.isfinite(v) for v in result.metrics.values())
    assert sorted(rec.losses()) == [0, 1, 2, 3]  # streamed per step, in two flushes
    assert rec.steps[-1][1].keys() == {"eval/val_loss", "eval/val_ppl", "eval/val_bpb"}  # at the end
    m = result.metrics
    assert m["train/tokens_per_s"] == pytest.approx(4 * 32 / m["train/step_time_s"])
    assert m["train/step_time_s_p10"] <= m["train/step_time_s"] <= m["train/step_time_s_p90"]
    model_cfg = resolved(cfg, cache_dir)[0]
    flops_active = (
        m["params_active"] - model_cfg.vocab_size * model_cfg.dim
    )  # the input lookup multiplies nothing
    per_token = accounting.train_flops_per_token(model_cfg, flops_active, 32)
    assert m["train/mfu"] == pytest.approx(m["train/tokens_per_s"] * per_token / 1e12)
    assert m["eval/val_ppl"] == pytest.approx(math.exp(m["eval/val_loss"]))
    bytes_per_token = resolved(cfg, cache_dir)[1].val_bytes_per_token
    assert m["data/val_bytes_per_token"] == bytes_per_token
    assert m["data/replaced_chars"] == 0  # the built-in corpus is Python's own (valid) text
    assert m["eval/val_bpb"] == pytest.approx(m["eval/val_loss"] / (math.log(2) * bytes_per_token))
    split = [m[f"mem/optimizer_bytes/{c}"] for c in ("dense", "l3_tables", "experts", "embeddings")]
    assert sum(split) == m["mem/optimizer_bytes"] > 0
    for c in ("l3_tables", "experts"):  # AdamW holds two fp32 moments (+ a step scalar) per parameter
        assert (m[f"mem/optimizer_bytes/{c}"] > 2 * m[f"mem/params_bytes/{c}"]) == (
            m[f"mem/params_bytes/{c}"] > 0
        )
    assert m["train/loss"] == rec.losses()[3] and m["train/loss"] < math.log(VOCAB) + 0.5
    assert result.params["params_active"] == m["params_active"] and result.info["family"] == family
    assert result.config["model"]["vocab_size"] == VOCAB
    model_cfg = resolved(cfg, cache_dir)[0]
    arrays = type(result).from_json(result.to_json()).arrays  # what result.json carries for the figures
    want = {"dense": set(), "l3": {"l3_rows_per_token"}, "moe": {"expert_tokens"}}
    want["hash_moe"] = want["moe"]
    assert arrays.keys() == want[family]
    if family == "hash_moe":  # nothing dropped, no aux loss
        assert m["lb/dropped_token_frac"] == 0 and m["lb/aux_loss"] == 0
    if family in ("moe", "hash_moe"):  # every routed token counted once per route: steps × tokens × top_k
        routes = np.asarray(arrays["expert_tokens"])
        assert routes.shape == (len(model_cfg.moe.positions), model_cfg.moe.num_experts)
        assert (routes.sum(axis=1) == 4 * 4 * 32 * model_cfg.moe.top_k).all()
    if family == "l3":
        rows = np.asarray(arrays["l3_rows_per_token"])
        assert len(rows) == VOCAB and rows.sum() == model_cfg.l3.budget and rows.min() >= 1
        summary = json.loads(result.info["allocation_summary"])
        assert summary["source"] == "lzw" and summary["budget"] == model_cfg.l3.budget
        assert (summary["rows_min"], summary["rows_max"]) == (rows.min(), rows.max())
        assert summary["rows_min"] <= summary["rows_per_token_weighted"] <= summary["rows_max"]
    else:
        assert "allocation_summary" not in result.info


def test_no_mfu_without_peak_and_no_device_memory_on_cpu(cache_dir):
    m = run(job("dense", steps=2), JobContext(cache_dir=cache_dir)).metrics
    assert "train/mfu" not in m and "mem/peak_device_bytes" not in m and m["mem/peak_host_bytes"] > 0


def test_l3_load_numbers_by_hand_with_a_uniform_allocation(cache_dir):
    cfg = job("l3", steps=3, overrides={"l3_allocation": "uniform"})
    m = run(cfg, JobContext(cache_dir=cache_dir)).metrics
    model_cfg, data = resolved(cfg, cache_dir)
    assert model_cfg.l3.budget == 4 * VOCAB  # uniform: every token owns exactly 4 rows
    row_bytes = (model_cfg.dim + model_cfg.l3.d_emb) * 4 * len(model_cfg.l3.positions)
    assert (m["lb/l3_rows_per_token_mean"], m["lb/l3_rows_per_token_max"]) == (4.0, 4.0)
    assert m["lb/l3_bytes_per_token"] == 4 * row_bytes
    from workloads.jobs.distributed import World

    batches = Batches(data.packed("train", 32, seed=cfg.seed), 4, World())
    distinct = [len(np.unique(batches(i)[0])) for i in range(3)]
    assert m["lb/l3_unique_rows_per_step"] == pytest.approx(np.mean(distinct) * 4 * 2)


def test_grad_accumulation_equals_the_big_batch(cache_dir):
    a, b = Recorder(), Recorder()
    run(job("l3", batch_size=8, steps=3, log_every=1), JobContext(cache_dir=cache_dir, on_metrics=a))
    run(
        job("l3", batch_size=4, grad_accum=2, steps=3, log_every=1),
        JobContext(cache_dir=cache_dir, on_metrics=b),
    )
    assert list(a.losses().values()) == pytest.approx(list(b.losses().values()), rel=1e-5)


def test_token_budget_sets_the_steps(cache_dir):
    result = run(job("dense", token_budget=5 * 4 * 32 - 1), JobContext(cache_dir=cache_dir))
    assert result.info["steps_done"] == "5"


@pytest.mark.parametrize("family", ["l3", "moe"])  # moe: the random token selection draws from the RNG
def test_resume_continues_the_loss_curve(family, cache_dir, tmp_path):
    cfg = job(family, steps=8, checkpoint_every=3, eval_every=3, log_every=1)
    full = Recorder()
    run(cfg, JobContext(cache_dir=cache_dir, on_metrics=full))
    ckpt = str(tmp_path / "ckpt")
    with pytest.raises(RuntimeError, match="killed at step 4"):
        run(cfg, JobContext(cache_dir=cache_dir, on_metrics=Recorder(fail_at_step=4), checkpoint_dir=ckpt))
    resumed = Recorder()
    result = run(cfg, JobContext(cache_dir=cache_dir, on_metrics=resumed, checkpoint_dir=ckpt))
    assert result.info["resumed_from_step"] == "3" and result.info["steps_done"] == "5"
    want = {s: v for s, v in full.losses().items() if s >= 3}
    assert resumed.losses() == want  # bit-identical: float32 on CPU, same data, same RNG
    assert result.metrics["eval/val_loss"] == full.steps[-1][1]["eval/val_loss"]
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["step-00000006", "step-00000008"]


def test_should_stop_saves_and_returns_early(cache_dir, tmp_path):
    calls = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) >= 2

    ctx = JobContext(cache_dir=cache_dir, should_stop=stop, checkpoint_dir=str(tmp_path))
    result = run(job("dense", steps=6), ctx)
    assert result.info["stopped_early"] == "true" and result.info["steps_done"] == "2"
    assert "eval/val_loss" not in result.metrics and (tmp_path / "step-00000002").is_dir()
    again = run(job("dense", steps=6), JobContext(cache_dir=cache_dir, checkpoint_dir=str(tmp_path)))
    assert again.info["resumed_from_step"] == "2" and again.info["steps_done"] == "4"


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"batch_size": 0}, "TrainJobConfig.batch_size"),
        ({"steps": 0}, "TrainJobConfig.steps"),
        ({"lr": -1.0}, "TrainJobConfig.lr"),
        ({"min_lr_ratio": 2.0}, "TrainJobConfig.min_lr_ratio"),
        ({"betas": (0.9, 1.5)}, "TrainJobConfig.betas"),
        ({"device": "tpu"}, "TrainJobConfig.device"),
        ({"dtype": "float16"}, "TrainJobConfig.dtype"),
        ({"eval_every": 0}, "TrainJobConfig.eval_every"),
        ({"l3_lr": -1e-3}, "TrainJobConfig.l3_lr"),
        ({"preset": "debugg"}, "unknown preset 'debugg'; did you mean 'debug'"),
    ],
)
def test_bad_config_fields(kw, field):
    with pytest.raises(ValueError, match=field):
        job("dense", **kw)


def test_bad_inputs_fail_before_any_work(tmp_path, cache_dir):
    empty = tmp_path / "cache"
    with pytest.raises(ValueError, match="seq_len: 512 exceeds the model's max_seq_len=256"):
        run(job("dense", seq_len=512), JobContext(cache_dir=str(empty)))
    with pytest.raises(ValueError, match="moe.ep_size=2 needs a distributed group"):
        run(job("moe", overrides={"moe_ep_size": 2}), JobContext(cache_dir=str(empty)))
    assert not empty.exists()  # nothing was prepared
    with pytest.raises(ValueError, match="batch_size=1000000 is larger than the data"):
        run(job("dense", batch_size=10**6), JobContext(cache_dir=cache_dir))
    bad = tmp_path / "alloc.npz"
    save_allocation(bad, uniform_allocate(600, 2400), vocab_size=600, budget=2400, cap=512,
                    corpus_fingerprint="x", n_tokens=1)  # fmt: skip
    with pytest.raises(ValueError, match="allocation_path .* has vocab_size=600"):
        run(replace(job("l3"), allocation_path=str(bad)), JobContext(cache_dir=cache_dir))


def test_zero_l3_lr_freezes_the_tables_only(cache_dir, tmp_path):
    cfg = job("l3", steps=2, l3_lr=0.0, l3_weight_decay=0.0, checkpoint_every=2)
    run(cfg, JobContext(cache_dir=cache_dir, checkpoint_dir=str(tmp_path)))
    trained = torch.load(tmp_path / "step-00000002" / "rank-0.pt", weights_only=False)["model"]
    prepared = prepare_job(cfg.model_spec(), None, cfg.data_config(), cache_dir)
    initial = build_model(prepared.model, prepared.counts, "cpu", 0)
    for name, before in initial.state_dict().items():
        is_table = name.endswith(("l3.keys", "l3.values"))
        assert torch.equal(before, trained[name]) == (is_table or name.endswith("offsets")), name


def test_extra_eval_corpora_get_their_own_keys(cache_dir):
    docs = DataConfig(source=BuiltinSource(content="docs"), max_documents=30, val_fraction=0.5)
    rec = Recorder()
    m = run(
        job("dense", steps=2, eval_data={"docs": docs}), JobContext(cache_dir=cache_dir, on_metrics=rec)
    ).metrics
    assert m["eval/docs/val_loss"] != m["eval/val_loss"] and math.isfinite(m["eval/docs/val_loss"])
    keys = {f"eval/{corpus}val_{k}" for corpus in ("", "docs/") for k in ("loss", "ppl", "bpb")}
    assert rec.steps[-1][1].keys() == keys and keys <= m.keys()
    # each corpus's bits per byte uses its own bytes per token (its own text, the job's tokenizer)
    main_ratio = m["eval/val_loss"] / m["eval/val_bpb"]
    docs_ratio = m["eval/docs/val_loss"] / m["eval/docs/val_bpb"]
    assert main_ratio != pytest.approx(docs_ratio, rel=1e-3)
    with pytest.raises(ValueError, match="TrainJobConfig.eval_data"):
        job("dense", eval_data={"a/b": docs})


def test_save_weights_writes_the_final_model_for_evaluation(cache_dir, tmp_path):
    cfg = job("dense", steps=2, save_weights=True, checkpoint_every=2)
    run(cfg, JobContext(cache_dir=cache_dir, checkpoint_dir=str(tmp_path)))
    final = torch.load(tmp_path / "final-model.pt", weights_only=False)
    last = torch.load(tmp_path / "step-00000002" / "rank-0.pt", weights_only=False)["model"]
    assert final.keys() == last.keys() and all(torch.equal(final[k], last[k]) for k in final)
    assert not (tmp_path / "final-model.pt.part").exists()
    stopped = tmp_path / "stopped"  # a job stopped early has no final weights
    run(cfg, JobContext(cache_dir=cache_dir, checkpoint_dir=str(stopped), should_stop=lambda: True))
    assert not (stopped / "final-model.pt").exists()
    with pytest.raises(ValueError, match="save_weights needs JobContext.checkpoint_dir"):
        run(cfg, JobContext(cache_dir=cache_dir))

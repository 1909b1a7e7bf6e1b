"""The training job's numbers against closed forms: tokens/s and MFU under a fake clock (with gradient
accumulation), the steps of a token budget, and an evaluation that sees validation windows only."""

import types

import pytest

from workloads.data import DataConfig
from workloads.jobs import timing
from workloads.jobs.result import JobContext
from workloads.jobs.setup import base_model_config, prepare_data
from workloads.jobs.spec import ModelOverrides
from workloads.jobs.train import TrainJobConfig, run
from workloads.models.transformer import Transformer

DATA = DataConfig(max_documents=50, val_fraction=0.2)
STEP_S = 0.125  # a binary fraction: the fake clock's differences are exact


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    path = tmp_path_factory.getbasetemp() / "jobs-cache"  # shared with the other jobs tests
    path.mkdir(exist_ok=True)
    return str(path)


def job(**kw) -> TrainJobConfig:
    base = dict(seq_len=32, batch_size=2, steps=4, eval_batches=2, lr_warmup_steps=1, timing_warmup_steps=1)
    return TrainJobConfig(
        "debug", "dense", overrides=ModelOverrides(vocab_size=512), data=DATA, **(base | kw)
    )


def fake_clock(monkeypatch) -> None:
    """The step timer's clock: each reading is STEP_S after the previous one, so every timed step (one
    reading on entry, one on exit) lasts exactly STEP_S however fast the machine is."""
    now = [0.0]

    def perf_counter() -> float:
        now[0] += STEP_S
        return now[0]

    monkeypatch.setattr(timing, "time", types.SimpleNamespace(perf_counter=perf_counter))


def test_tokens_per_s_and_mfu_with_gradient_accumulation(monkeypatch, cache_dir):
    fake_clock(monkeypatch)
    cfg = job(batch_size=2, grad_accum=3)
    result = run(cfg, JobContext(cache_dir=cache_dir, peak_flops=1e12))
    m = result.metrics
    assert m["train/step_time_s"] == m["train/step_time_s_p10"] == m["train/step_time_s_p90"] == STEP_S
    assert m["train/tokens_per_s"] == 2 * 3 * 32 / STEP_S  # micro-batch · accumulation · window / step
    model = base_model_config(cfg.model_spec())
    flops_active = m["params_total"] - model.vocab_size * model.dim  # dense: all but the embedding lookup
    per_token = 6 * flops_active + 12 * model.n_layers * model.n_heads * model.head_dim * 32
    assert m["train/mfu"] == pytest.approx(2 * 3 * 32 / STEP_S * per_token / 1e12, rel=1e-12)


@pytest.mark.parametrize(("budget", "accum", "world", "steps"), [
    (2 * 3 * 32 * 2 * 5, 3, 2, 5),      # exactly 5 steps of 384 tokens
    (2 * 3 * 32 * 2 * 5 + 1, 3, 2, 6),  # one token more: a sixth step
    (2 * 3 * 32 * 5 - 1, 3, 1, 5),
    (1, 1, 4, 1),
])  # fmt: skip
def test_token_budget_steps_count_accumulation_and_ranks(budget, accum, world, steps):
    assert job(batch_size=2, grad_accum=accum, token_budget=budget).total_steps(world) == steps


def test_token_budget_run_with_accumulation_does_the_closed_form_steps(cache_dir):
    result = run(job(grad_accum=2, token_budget=3 * 2 * 2 * 32 - 5), JobContext(cache_dir=cache_dir))
    assert result.info["steps_done"] == "3"


def test_evaluation_sees_validation_windows_only(monkeypatch, cache_dir):
    cfg = job(steps=2, eval_batches=3, batch_size=2)
    data = prepare_data(cfg.data_config(), base_model_config(cfg.model_spec()), cache_dir)
    windows = {
        split: {tuple(ds[i][0].tolist()) for i in range(ds.n_windows)}
        for split in ("train", "val")
        for ds in [data.packed(split, 32, shuffle=False)]
    }
    assert not windows["train"] & windows["val"]  # the splits hold distinct token windows
    seen = []
    forward = Transformer.forward

    def recording(self, ids, *args, **kwargs):
        if not self.training:
            seen.extend(tuple(row) for row in ids.tolist())
        return forward(self, ids, *args, **kwargs)

    monkeypatch.setattr(Transformer, "forward", recording)
    run(cfg, JobContext(cache_dir=cache_dir))
    assert len(seen) == 3 * 2 and set(seen) <= windows["val"]  # eval_batches × batch, all validation

"""workloads.jobs.metrics and optim: hand-computed cases."""

import math

import numpy as np
import pytest
import torch

from workloads.jobs import metrics, optim
from workloads.jobs.timing import TimingStats
from workloads.models import accounting, presets
from workloads.models.accounting import count_params
from workloads.models.transformer import Transformer

pytestmark = pytest.mark.filterwarnings("ignore:l3.allocation=.lzw. but no counts")


def test_throughput_uses_the_median_and_names_the_spread():
    stats = TimingStats(median_s=0.5, p10_s=0.4, p90_s=0.8, mean_s=0.55, n=10)
    assert metrics.throughput_metrics(stats, tokens_per_step=1000) == {
        "train/tokens_per_s": 2000.0,
        "train/step_time_s": 0.5,
        "train/step_time_s_p10": 0.4,
        "train/step_time_s_p90": 0.8,
    }


def test_flops_per_token_and_mfu():
    cfg = presets.get("debug")  # 4 layers, 4 heads of 16
    assert accounting.train_flops_per_token(cfg, 1000, 32) == 6000 + 12 * 4 * 4 * 16 * 32
    # 1e4 tokens/s * 1e6 FLOPs/token = 1e10 FLOP/s on 2 devices of 1e11 peak -> 5%
    assert metrics.mfu(1e4, 1e6, 1e11, world_size=2) == pytest.approx(0.05)
    with pytest.raises(ValueError, match="peak_flops"):
        metrics.mfu(1.0, 1.0, 0.0)


def test_moe_balance():
    counts = np.array([[4, 4, 4, 4], [8, 0, 4, 4]])  # layer 0 balanced; layer 1 mean 4, max 8
    out = metrics.moe_balance(counts, dropped_routes=4, aux_loss_sum=0.3, n_steps=3)
    std1 = math.sqrt(((8 - 4) ** 2 + 4**2 + 0 + 0) / 4)  # = sqrt(8)
    assert out["lb/expert_tokens_max_over_mean"] == pytest.approx((1.0 + 2.0) / 2)
    assert out["lb/expert_tokens_cv"] == pytest.approx((0.0 + std1 / 4) / 2)
    assert out["lb/dropped_route_frac"] == pytest.approx(4 / 32)
    assert "lb/dropped_token_frac" not in out  # needs the gate's per-token routes
    assert out["lb/aux_loss"] == pytest.approx(0.1)
    both = metrics.moe_balance(counts, dropped_routes=4, aux_loss_sum=0.3, n_steps=3, dropped_tokens=1,
                               token_passes=16)  # fmt: skip
    assert both["lb/dropped_token_frac"] == 1 / 16 and both["lb/dropped_route_frac"] == 4 / 32
    with pytest.raises(ValueError, match="expert_tokens"):
        metrics.moe_balance(np.zeros(4), 0, 0, 1)


def test_moe_step_balance_sees_per_step_imbalance_the_run_total_hides():
    """Step 0 sends every route to expert 0, step 1 every route to expert 1: the run total is balanced
    (max/mean 1, CV 0) but each step has max/mean 2 and CV 1 (2 experts, one layer)."""
    steps = np.array([[[6, 0]], [[0, 6]]])  # (steps, layers, experts)
    whole = metrics.moe_balance(steps.sum(0), 0, 0.0, 2)
    assert whole["lb/expert_tokens_max_over_mean"] == 1.0 and whole["lb/expert_tokens_cv"] == 0.0
    per = metrics.moe_step_balance(steps)
    assert per["lb/expert_tokens_max_over_mean_step_median"] == 2.0
    assert per["lb/expert_tokens_max_over_mean_step_max"] == 2.0
    assert per["lb/expert_tokens_cv_step_p90"] == 1.0
    # Three steps, max/mean 1, 1.5, 2 (layer means 4): median 1.5, p90 1.9 (linear), max 2.
    three = np.array([[[4, 4]], [[6, 2]], [[8, 0]]])
    out = metrics.moe_step_balance(three)
    assert out["lb/expert_tokens_max_over_mean_step_median"] == 1.5
    assert out["lb/expert_tokens_max_over_mean_step_p90"] == pytest.approx(1.9)
    assert out["lb/expert_tokens_cv_step_max"] == 1.0
    with pytest.raises(ValueError, match="steps, layers, experts"):
        metrics.moe_step_balance(np.zeros((2, 3)))


def test_l3_step_balance():
    out = metrics.l3_step_balance(np.array([10.0, 30.0, 20.0]), np.array([10.0, 10.0, 10.0]), row_bytes=8)
    assert out["lb/l3_rows_per_token_mean_step_median"] == 2.0
    assert out["lb/l3_rows_per_token_mean_step_max"] == 3.0
    assert out["lb/l3_bytes_per_token_step_median"] == 16.0
    assert out["lb/l3_bytes_per_token_step_p90"] == pytest.approx(8 * 2.8)


def test_l3_batch_stats_and_balance():
    counts = np.array([1, 3, 2, 5])
    ids = np.array([[1, 1, 3], [0, 1, 2]])  # rows 3, 3, 5, 1, 3, 2 -> sum 17, max 5; distinct 0,1,2,3 -> 11
    assert metrics.l3_batch_stats(ids, counts) == (17, 5, 6, 11)
    out = metrics.l3_balance(rows_sum=34, rows_max=5, n_positions=12, unique_rows=22, n_steps=2, row_bytes=10)
    assert out == {
        "lb/l3_rows_per_token_mean": pytest.approx(34 / 12),
        "lb/l3_rows_per_token_max": 5.0,
        "lb/l3_unique_rows_per_step": 11.0,
        "lb/l3_bytes_per_token": pytest.approx(34 / 12 * 10),
    }


def test_l3_row_bytes():
    cfg = presets.get("debug", "l3")  # dim 64, d_emb 32, 2 L3 layers
    assert metrics.l3_row_bytes(cfg, 4) == (64 + 32) * 4 * 2


def test_eval_metrics():
    # 2 nats per token at 4 bytes per token: 2 / ln 2 bits per token = 2 / (4 ln 2) bits per byte
    out = metrics.eval_metrics(loss_sum=20.0, n_tokens=10, bytes_per_token=4.0)
    assert out == {
        "eval/val_loss": 2.0,
        "eval/val_ppl": pytest.approx(math.exp(2.0)),
        "eval/val_bpb": pytest.approx(0.5 / math.log(2), rel=1e-12),
    }
    # a uniform model over 256 byte values with one byte per token scores exactly 8 bits per byte
    uniform = metrics.eval_metrics(loss_sum=3 * math.log(256), n_tokens=3, bytes_per_token=1.0)
    assert uniform["eval/val_bpb"] == pytest.approx(8.0, rel=1e-12)
    with pytest.raises(ValueError, match="n_tokens"):
        metrics.eval_metrics(1.0, 0, 1.0)
    with pytest.raises(ValueError, match="bytes_per_token"):
        metrics.eval_metrics(1.0, 1, 0.0)


@pytest.mark.parametrize("family", ["dense", "l3", "moe"])
def test_param_bytes_match_accounting(family):
    cfg = presets.get("debug", family)
    model = Transformer(cfg)
    assert optim.param_bytes(model) == {k: 4 * v for k, v in count_params(cfg).by_category.items()}


def test_param_groups_and_schedule():
    model = Transformer(presets.get("debug", "l3"))
    groups = optim.param_groups(model, lr=1e-3, weight_decay=0.1, l3_lr=1e-2, embedding_weight_decay=0.0)
    by_name = {g["name"]: g for g in groups}
    assert (by_name["l3_tables"]["lr"], by_name["l3_tables"]["weight_decay"]) == (1e-2, 0.1)
    assert (by_name["embeddings"]["lr"], by_name["embeddings"]["weight_decay"]) == (1e-3, 0.0)
    assert by_name["no_decay"]["weight_decay"] == 0.0 and all(
        p.ndim == 1 for p in by_name["no_decay"]["params"]
    )
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    opt = optim.build_optimizer(groups, (0.9, 0.95))
    sched = optim.build_scheduler(opt, warmup_steps=2, total_steps=6, min_ratio=0.1)
    lrs = []
    for _ in range(7):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    base = 1e-3
    expected = [
        0.5,
        1.0,
        1.0,
        0.5 * (1 + math.cos(math.pi / 4)),
        0.5,
        0.5 * (1 + math.cos(3 * math.pi / 4)),
        0.0,
    ]
    assert lrs == pytest.approx(
        [base * (0.1 + 0.9 * f) if i >= 2 else base * f for i, f in enumerate(expected)]
    )
    assert optim.optimizer_bytes(opt) == 0  # no gradients yet: AdamW created no state
    loss = model(torch.zeros(1, 4, dtype=torch.long))[0].sum()
    loss.backward()
    opt.step()
    n_params = sum(p.numel() for p in model.parameters())
    assert optim.optimizer_bytes(opt) == 2 * 4 * n_params + 4 * len(
        list(model.parameters())
    )  # moments + step
    by_category = optim.optimizer_bytes_by_category(opt, model)
    assert sum(by_category.values()) == optim.optimizer_bytes(opt) and by_category.keys() == set(
        optim.PARAM_CATEGORIES
    )
    n_tables = sum(p.numel() for n, p in model.named_parameters() if n.endswith(("l3.keys", "l3.values")))
    n_table_tensors = sum(1 for n, _ in model.named_parameters() if n.endswith(("l3.keys", "l3.values")))
    assert n_table_tensors > 0 and by_category["l3_tables"] == 2 * 4 * n_tables + 4 * n_table_tensors
    assert by_category["experts"] == 0
    stranger = torch.nn.Parameter(torch.zeros(3))  # e.g. a wrapper's master copy: not a model parameter
    opt.state[stranger] = {"exp_avg": torch.zeros(3)}
    assert optim.optimizer_bytes_by_category(opt, model)["unattributed"] == 12

"""A realistic fake suite in `mlflow.search_runs` layout: 4 sizes × dense/L3/MoE × 2 seeds of training,
inference sweeps with offload, L3 ablations (cap, allocation, tied), a failed run and the parent run.

Losses follow known power laws per family so that tests can check the fits; the seed offsets are ±0.01.
"""

import numpy as np
import pandas as pd
import pytest

from results import names

SIZES = {"tiny": 2_000_000, "small": 8_000_000, "medium": 32_000_000, "large": 128_000_000}
SPARSITY = 4.0
# loss = a * N^-b + c per family (N = active params)
LAWS = {"dense": (60.0, 0.25, 2.0), "l3": (55.0, 0.25, 2.0), "moe": (57.0, 0.25, 2.0)}
SEED_OFFSET = {0: -0.01, 1: 0.01}
BATCH_SIZES = (1, 4, 16)


def law_loss(family: str, n_active: float) -> float:
    a, b, c = LAWS[family]
    return a * n_active ** (-b) + c


def _run(
    run_id: str, family: str, preset: str, seed: int, kind: str = "train", variant: str = "base", **extra
):
    """One job run as the orchestrator records it (orchestrator/runs/tracking.py, suite.py labels)."""
    active = SIZES[preset]
    total = active if family == "dense" else int(active * SPARSITY)
    row = {
        "run_id": run_id,
        "status": "FINISHED",
        "start_time": pd.Timestamp("2025-01-01", tz="UTC"),
        f"tags.{names.TAG_PARENT_RUN}": "parent",
        f"tags.{names.TAG_RUN_TYPE}": names.RUN_TYPE_JOB,
        f"tags.{names.TAG_JOB_KIND}": kind,
        f"tags.{names.TAG_FAMILY}": family,
        f"tags.{names.TAG_PRESET}": preset,
        f"tags.{names.TAG_VARIANT}": variant,
        f"tags.{names.TAG_GROUP}": f"{preset}/{variant}/s{seed}",
        f"tags.{names.TAG_SEED}": str(seed),
        f"tags.{names.TAG_INFO_HARDWARE}": "cpu",
        f"tags.{names.TAG_FINGERPRINT}": f"fp-{run_id}",
        f"tags.{names.TAG_OUTCOME}": "finished",
        f"metrics.{names.PARAMS_ACTIVE}": float(active),
        f"metrics.{names.PARAMS_TOTAL}": float(total),
        f"metrics.{names.SPARSITY}": total / active,
        "metrics.match/params_active": float(active),
        f"metrics.{names.MATCH_ACTIVE_REL_ERR}": 0.0 if family == "dense" else 0.004,
        "params.kind": kind,
        names.param_column(names.PARAM_MODEL + ".family"): family,
    }
    if family == "moe":
        row[f"metrics.{names.MATCH_TOTAL_REL_ERR}"] = -0.006
    if family == "l3":
        row |= {
            f"params.{names.PARAM_L3_ALLOCATION}": "lzw",
            f"params.{names.PARAM_L3_CAP}": "512",
            f"params.{names.PARAM_L3_TIED}": "False",
            f"params.{names.PARAM_L3_POSITIONS}": "[1, 3]",
        }
    if family == "moe":
        row |= {f"params.{names.PARAM_MOE_NUM_EXPERTS}": "8", f"params.{names.PARAM_MOE_TOP_K}": "2"}
    return row | extra


def _train_metrics(family: str, active: int, seed: int) -> dict:
    loss = law_loss(family, active) + SEED_OFFSET[seed]
    tok_s = {"dense": 10_000.0, "l3": 9_000.0, "moe": 6_000.0}[family] * 2e6 / active
    m = {
        names.EVAL_VAL_LOSS: loss,
        names.EVAL_VAL_PPL: float(np.exp(loss)),
        names.TRAIN_LOSS: loss + 0.05,
        names.TRAIN_TOKENS_PER_S: tok_s * (1 + SEED_OFFSET[seed]),
        names.TRAIN_STEP_TIME_S: 4096 / tok_s,
        names.MEM_PEAK_DEVICE_BYTES: 1.3 * (4.0 + 8.0) * active * (1 if family == "dense" else SPARSITY),
        names.MEM_PEAK_HOST_BYTES: 2e8,
        names.params_bytes_key("dense"): 4.0 * active * 0.7,
        names.params_bytes_key("embeddings"): 4.0 * active * 0.3,
        names.MEM_OPTIMIZER_BYTES: 8.0 * active * (1 if family == "dense" else SPARSITY),
    }
    if family == "l3":
        m |= {
            names.params_bytes_key("l3_tables"): 4.0 * active * (SPARSITY - 1),
            names.LB_L3_ROWS_PER_TOKEN_MEAN: 4.0,
            names.LB_L3_ROWS_PER_TOKEN_MAX: 512.0,
            names.LB_L3_UNIQUE_ROWS_PER_STEP: 9000.0,
            names.LB_L3_BYTES_PER_TOKEN: 4.0 * 96 * 4,
        }
    if family == "moe":
        m |= {
            names.params_bytes_key("experts"): 4.0 * active * (SPARSITY - 1),
            names.LB_EXPERT_MAX_OVER_MEAN: 1.4,
            names.LB_EXPERT_CV: 0.2,
            names.LB_DROPPED_TOKEN_FRAC: 0.03,
            names.LB_AUX_LOSS: 0.011,
        }
    return {f"metrics.{k}": v for k, v in m.items()}


def _infer_metrics(family: str) -> dict:
    m = {}
    for bs in BATCH_SIZES:
        decode = 100.0 * bs**0.8
        m[names.batch_size_key(names.INFER_DECODE_TOKENS_PER_S, bs)] = decode
        m[names.batch_size_key(names.INFER_PREFILL_TOKENS_PER_S, bs)] = 20 * decode
        m[names.batch_size_key(names.INFER_TTFT_S, bs)] = 0.01 * bs
        if family == "l3":
            ratio = 0.5 + 0.1 * np.log2(bs)
            m[names.batch_size_key(names.INFER_OFFLOAD_DECODE_RATIO, bs)] = ratio
            m[names.batch_size_key(names.INFER_OFFLOAD_DECODE_TOKENS_PER_S, bs)] = ratio * decode
    return {f"metrics.{k}": v for k, v in m.items()}


def fake_search_runs() -> pd.DataFrame:
    rows = []
    for preset, active in SIZES.items():
        for family in ("dense", "l3", "moe"):
            for seed in (0, 1):
                rid = f"{family}-{preset}-{seed}"
                rows.append(_run(rid, family, preset, seed) | _train_metrics(family, active, seed))
            rows.append(_run(f"{family}-{preset}-infer", family, preset, 0, "infer") | _infer_metrics(family))
    # Ablations of the tiny L3 model: suite variants (their dense job is the base one, deduplicated).
    tiny_l3 = _train_metrics("l3", SIZES["tiny"], 0)
    for variant, param, value, dloss in [
        ("cap64", names.PARAM_L3_CAP, "64", 0.02),
        ("uniform", names.PARAM_L3_ALLOCATION, "uniform", 0.05),
        ("tied", names.PARAM_L3_TIED, "True", 0.03),
    ]:
        metrics = tiny_l3 | {
            f"metrics.{names.EVAL_VAL_LOSS}": tiny_l3[f"metrics.{names.EVAL_VAL_LOSS}"] + dloss
        }
        extra = {f"params.{param}": value}
        rows.append(_run(f"l3-tiny-{variant}", "l3", "tiny", 0, variant=variant, **extra) | metrics)
    failed = _run("moe-medium-failed", "moe", "medium", 2) | {"status": "FAILED"}
    failed[f"tags.{names.TAG_OUTCOME}"] = "failed"
    rows.append(failed)
    rows.append(
        {
            "run_id": "parent",
            "status": "FINISHED",
            f"tags.{names.TAG_RUN_TYPE}": names.RUN_TYPE_SUITE,
            f"tags.{names.TAG_SUITE}": "fake",
        }
    )
    return pd.DataFrame(rows)


def fake_history() -> pd.DataFrame:
    raw = fake_search_runs()
    train = raw[raw[f"tags.{names.TAG_JOB_KIND}"].eq("train") & raw["status"].eq("FINISHED")]
    rows = []
    for _, r in train.iterrows():
        final = r[f"metrics.{names.TRAIN_LOSS}"]
        rows += [(r["run_id"], names.TRAIN_LOSS, s, final + 3.0 / (s + 1)) for s in range(0, 50, 5)]
    return pd.DataFrame(rows, columns=["run_id", "key", "step", "value"])


@pytest.fixture
def raw_runs() -> pd.DataFrame:
    return fake_search_runs()


@pytest.fixture
def history() -> pd.DataFrame:
    return fake_history()

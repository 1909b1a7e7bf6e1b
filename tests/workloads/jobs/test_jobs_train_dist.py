"""workloads.jobs.train as 2 ranks of a gloo group (torch.multiprocessing spawn): DDP equals one process with
the doubled batch; DeepSpeed MoE with ep_size=2 all-reduces its load-balance counts."""

import json
import os
import socket
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from workloads.data import DataConfig
from workloads.jobs import metrics, timing
from workloads.jobs.balance import reduce_l3_balance, reduce_moe_balance
from workloads.jobs.result import JobContext
from workloads.jobs.spec import ModelOverrides
from workloads.jobs.train import TrainJobConfig, run

DATA = DataConfig(max_documents=50, val_fraction=0.2)
STEP_S = 0.125  # a binary fraction: the fake clock's differences are exact


def job(family: str, batch_size: int, **overrides) -> TrainJobConfig:
    return TrainJobConfig(
        preset="debug", family=family, overrides=ModelOverrides(vocab_size=512, **overrides), data=DATA,
        seq_len=32, batch_size=batch_size, steps=3, eval_batches=2, lr_warmup_steps=1, log_every=1,
        timing_warmup_steps=1,
    )  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, cfg: TrainJobConfig, cache_dir: str, out: str) -> None:
    fake_clock()
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port), DS_ACCELERATOR="cpu",
    )  # fmt: skip
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        # The reductions by themselves, on inputs that differ per rank.
        moe = reduce_moe_balance(
            torch.tensor([[rank + 1, 3 * rank]]), torch.tensor([rank, 2 * rank]), torch.tensor(0.5 + rank),
            token_passes=4 + rank, n_steps=2,
        )  # fmt: skip
        l3 = reduce_l3_balance(np.array([10.0 + rank, 5.0, 7.0, 3.0 + rank]), 2, 8, torch.device("cpu"))
        losses: dict[int, float] = {}
        result = run(cfg, JobContext(cache_dir=cache_dir, on_metrics=lambda m, s: losses.update(
            {s: m["train/loss"]} if "train/loss" in m else {})))  # fmt: skip
        payload = {"metrics": result.metrics, "info": result.info, "losses": losses, "moe": moe, "l3": l3}
        Path(out, f"rank{rank}.json").write_text(json.dumps(payload))
        dist.barrier()  # neither rank tears gloo down while the other still has work in flight
    finally:
        dist.destroy_process_group()


def fake_clock() -> None:
    """The step timer's clock in this process: each reading STEP_S after the previous one, so each timed
    step (a reading on entry and on exit) lasts exactly STEP_S however loaded the machine is."""
    now = [0.0]

    def perf_counter() -> float:
        now[0] += STEP_S
        return now[0]

    timing.time = types.SimpleNamespace(perf_counter=perf_counter)


def spawn(cfg: TrainJobConfig, cache_dir: str, out: Path) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    mp.spawn(_worker, args=(2, _free_port(), cfg, cache_dir, str(out)), nprocs=2)
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    path = tmp_path_factory.getbasetemp() / "jobs-cache"  # shared with the other jobs tests
    path.mkdir(exist_ok=True)
    return str(path)


def test_ddp_two_ranks_equal_one_process_with_the_doubled_batch(cache_dir, tmp_path):
    ranks = spawn(job("l3", batch_size=2), cache_dir, tmp_path)
    single: dict[int, float] = {}
    ctx = JobContext(cache_dir=cache_dir, on_metrics=lambda m, s: single.update(
        {s: m["train/loss"]} if "train/loss" in m else {}))  # fmt: skip
    one = run(job("l3", batch_size=4), ctx)
    r0, r1 = ranks
    assert r0["info"]["parallel"] == "ddp" and r0["info"]["world_size"] == "2"
    assert r1["losses"] == {}  # only rank 0 streams
    # every rank's micro-batch · accumulation · window, over the fake clock's step time
    assert r0["metrics"]["train/tokens_per_s"] == 2 * 1 * 32 * 2 / STEP_S  # (accumulation: closed_forms)
    assert r0["metrics"]["train/step_time_s"] == STEP_S
    # Rank r takes windows r, r+2, ... of the same order: the two micro-batches are the big batch, and DDP's
    # gradient mean is the big batch's mean loss gradient.
    assert [r0["losses"][str(s)] for s in range(3)] == pytest.approx([single[s] for s in range(3)], rel=1e-5)
    m0, m = r0["metrics"], one.metrics
    assert m0["eval/val_loss"] == pytest.approx(m["eval/val_loss"], rel=1e-5)  # same 8 windows, split in two
    for key in ("lb/l3_rows_per_token_mean", "lb/l3_rows_per_token_max", "lb/l3_bytes_per_token"):
        assert m0[key] == pytest.approx(m[key], rel=1e-12), key  # all-reduced sums = the big batch's
    # Distinct rows are per rank (each rank gathers its own), so two ranks touch at least the union.
    assert m0["lb/l3_unique_rows_per_step"] >= m["lb/l3_unique_rows_per_step"]
    same = [k for k in m0 if k.startswith(("lb/", "eval/", "params", "train/loss", "mem/params"))]
    assert {k: m0[k] for k in same} == {k: r1["metrics"][k] for k in same}
    # reduce_*_balance: both ranks see the all-rank numbers.
    want_moe = metrics.moe_balance(np.array([[3, 3]]), dropped_routes=2, aux_loss_sum=2.0 / 2, n_steps=2,
                                   dropped_tokens=1, token_passes=9)  # fmt: skip
    assert r0["moe"] == r1["moe"] == pytest.approx(want_moe)
    want_l3 = metrics.l3_balance(
        rows_sum=21, rows_max=4, n_positions=10, unique_rows=14, n_steps=2, row_bytes=8
    )
    assert r0["l3"] == r1["l3"] == pytest.approx(want_l3)


def test_deepspeed_moe_expert_parallel_counts_are_all_reduced(cache_dir, tmp_path):
    r0, r1 = spawn(job("moe", batch_size=4, moe_ep_size=2), cache_dir, tmp_path)
    assert r0["info"]["parallel"] == "deepspeed"
    keys = ("lb/expert_tokens_max_over_mean", "lb/expert_tokens_cv", "lb/dropped_token_frac", "lb/aux_loss")
    # Each rank routes different tokens: equal numbers on both ranks mean the counts were summed first.
    assert [r0["metrics"][k] for k in keys] == [r1["metrics"][k] for k in keys]
    assert r0["metrics"]["lb/expert_tokens_max_over_mean"] >= 1.0
    assert 0.0 <= r0["metrics"]["lb/dropped_token_frac"] < 0.5
    assert sorted(map(int, r0["losses"])) == [0, 1, 2] and r0["metrics"]["eval/val_loss"] > 0
    assert r0["metrics"]["eval/val_loss"] == r1["metrics"]["eval/val_loss"]
    # The engine's optimizer steps the model's own parameters: every state byte has a category.
    m0 = r0["metrics"]
    split = [m0[f"mem/optimizer_bytes/{c}"] for c in ("dense", "l3_tables", "experts", "embeddings")]
    assert "mem/optimizer_bytes/unattributed" not in m0 and sum(split) == m0["mem/optimizer_bytes"]
    assert m0["mem/optimizer_bytes/experts"] > 2 * m0["mem/params_bytes/experts"] > 0  # this rank's experts

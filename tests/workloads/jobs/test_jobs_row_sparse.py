"""Row-sparse L3 table optimizers: lazy Adam equals AdamW on touched rows and leaves the others alone,
row-wise Adagrad by hand, the mixed optimizer under the lr scheduler and checkpoints, the train job
with each `l3_optimizer`, and the config error."""

import pytest
import torch

from workloads.jobs import optim
from workloads.jobs.row_sparse import MixedOptimizer, RowSparseAdam, RowwiseAdagrad, touched_rows


def _grad(rows: list[int], shape=(6, 3), seed=0) -> torch.Tensor:
    g = torch.zeros(shape, dtype=torch.float64)
    g[rows] = torch.randn(len(rows), shape[1], generator=torch.Generator().manual_seed(seed), dtype=g.dtype)
    return g


def test_touched_rows_are_the_nonzero_gradient_rows():
    g = _grad([1, 4])
    g[4, 1] = 0.0  # a partly zero row is still touched
    assert touched_rows(g).tolist() == [1, 4]


@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_lazy_adam_equals_adamw_on_touched_rows_and_skips_the_rest(wd):
    start = torch.randn(6, 3, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    lazy, dense = start.clone().requires_grad_(), start.clone().requires_grad_()
    opt_lazy = RowSparseAdam([lazy], lr=0.1, betas=(0.9, 0.99), weight_decay=wd)
    opt_dense = torch.optim.AdamW([dense], lr=0.1, betas=(0.9, 0.99), eps=1e-8, weight_decay=wd)
    for step in range(3):  # rows 0 and 2 every step
        for p, opt in ((lazy, opt_lazy), (dense, opt_dense)):
            p.grad = _grad([0, 2], seed=step)
            opt.step()
    torch.testing.assert_close(lazy[[0, 2]], dense[[0, 2]], rtol=1e-12, atol=1e-12)
    assert torch.equal(lazy[[1, 3, 4, 5]], start[[1, 3, 4, 5]])  # untouched: no step, no decay
    assert opt_lazy.state[lazy]["exp_avg"][[1, 3, 4, 5]].abs().sum() == 0
    lazy.grad = _grad([1], seed=7)  # row 1's first step, at global step 4
    before = lazy.detach().clone()
    opt_lazy.step()
    assert torch.equal(lazy[[0, 2, 3]], before[[0, 2, 3]])  # rows 0, 2 keep their value (no momentum drift)
    m = 0.1 * lazy.grad[1]
    v = 0.01 * lazy.grad[1] ** 2
    want = before[1] * (1 - 0.1 * wd) - 0.1 * (m / (1 - 0.9**4)) / ((v / (1 - 0.99**4)).sqrt() + 1e-8)
    torch.testing.assert_close(lazy[1], want, rtol=1e-12, atol=1e-12)


def test_rowwise_adagrad_by_hand():
    w = torch.ones(4, 2, dtype=torch.float64, requires_grad=True)
    opt = RowwiseAdagrad([w], lr=0.5, eps=0.0)
    w.grad = torch.tensor([[3.0, 4.0], [0, 0], [1.0, 1.0], [0, 0]], dtype=torch.float64)
    opt.step()
    assert opt.state[w]["sum"].tolist() == [12.5, 0.0, 1.0, 0.0]  # mean of g²: (9 + 16) / 2, 0, 1, 0
    s = 12.5**0.5
    want = [[1 - 0.5 * 3 / s, 1 - 0.5 * 4 / s], [1, 1], [0.5, 0.5], [1, 1]]
    torch.testing.assert_close(w.detach(), torch.tensor(want, dtype=torch.float64), rtol=1e-12, atol=0)


def test_build_optimizer_routes_the_table_group_and_schedules_both():
    table = torch.nn.Parameter(torch.zeros(5, 2))
    dense = torch.nn.Parameter(torch.zeros(2, 2))
    groups = [
        {"name": "decay", "params": [dense], "lr": 1.0, "weight_decay": 0.1},
        {"name": "l3_tables", "params": [table], "lr": 5.0, "weight_decay": 0.0},
    ]
    assert isinstance(optim.build_optimizer(groups, (0.9, 0.95)), torch.optim.AdamW)
    opt = optim.build_optimizer(groups, (0.9, 0.95), l3_optimizer="rowwise_adagrad")
    assert isinstance(opt, MixedOptimizer)
    sched = optim.build_scheduler(opt, warmup_steps=2, total_steps=4, min_ratio=0.1)
    assert [g["lr"] for g in opt.param_groups] == [0.5, 2.5]  # warm-up step 1 of 2 for both groups
    table.grad, dense.grad = torch.ones(5, 2), torch.ones(2, 2)
    opt.step()
    sched.step()
    assert [g["lr"] for g in opt.param_groups] == [1.0, 5.0]
    assert optim.optimizer_bytes(opt) == 5 * 4 + 2 * 2 * 4 * 2 + 4  # accumulator; AdamW moments + step
    again = optim.build_optimizer(groups, (0.9, 0.95), l3_optimizer="rowwise_adagrad")
    again.load_state_dict(opt.state_dict())
    assert torch.equal(again.optimizers[1].state[table]["sum"], opt.optimizers[1].state[table]["sum"])
    with pytest.raises(ValueError, match="l3_optimizer must be one of"):
        optim.build_optimizer(groups, (0.9, 0.95), l3_optimizer="sgd")


@pytest.mark.parametrize("choice", ["sparse_adam", "rowwise_adagrad"])
def test_train_job_runs_with_each_table_optimizer(choice, tmp_path_factory):
    from workloads.data import DataConfig
    from workloads.jobs.result import JobContext
    from workloads.jobs.spec import ModelOverrides
    from workloads.jobs.train import TrainJobConfig, run

    cache = tmp_path_factory.getbasetemp() / "jobs-cache"
    cache.mkdir(exist_ok=True)
    cfg = TrainJobConfig(
        preset="debug", family="l3", overrides=ModelOverrides(vocab_size=512), steps=3, seq_len=32,
        batch_size=4, eval_batches=1, lr_warmup_steps=1, timing_warmup_steps=1, l3_optimizer=choice,
        data=DataConfig(max_documents=50, val_fraction=0.2),
    )  # fmt: skip
    m = run(cfg, JobContext(cache_dir=str(cache))).metrics
    dense_moments = m["mem/optimizer_bytes/l3_tables"]
    if choice == "rowwise_adagrad":  # one float per row: far less than two per element
        assert 0 < dense_moments < m["mem/params_bytes/l3_tables"] / 10
    else:
        assert dense_moments >= 2 * m["mem/params_bytes/l3_tables"]
    assm = m["train/loss"]
    assert assm == assm  # finite loss (not NaN)


def test_bad_l3_optimizer_is_rejected_naming_the_field():
    from workloads.jobs.train import TrainJobConfig

    with pytest.raises(ValueError, match="TrainJobConfig.l3_optimizer must be one of .* got 'lazy'"):
        TrainJobConfig(preset="debug", family="l3", l3_optimizer="lazy")


def _sparse(rows: list[int], grads: torch.Tensor, shape=(6, 3)) -> torch.Tensor:
    """An uncoalesced COO gradient: rows may repeat (their values add), as the L3 backward emits them."""
    return torch.sparse_coo_tensor(torch.tensor([rows]), grads, shape, check_invariants=True)


@pytest.mark.parametrize("make", [RowSparseAdam, RowwiseAdagrad], ids=["sparse_adam", "rowwise_adagrad"])
def test_sparse_gradients_step_exactly_like_their_dense_equivalent(make):
    start = torch.randn(6, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    a, b = start.clone().requires_grad_(), start.clone().requires_grad_()
    opt_a, opt_b = make([a], lr=0.1, weight_decay=0.1), make([b], lr=0.1, weight_decay=0.1)
    for step in range(3):
        g = torch.randn(4, 3, generator=torch.Generator().manual_seed(step), dtype=torch.float64)
        a.grad = _sparse([4, 1, 4, 0], g)  # row 4 twice: its two pieces add
        b.grad = a.grad.to_dense()
        opt_a.step()
        opt_b.step()
    assert torch.equal(a, b)
    assert torch.equal(a[[2, 3, 5]], start[[2, 3, 5]])


def test_clip_grad_norm_counts_sparse_rows_once_and_scales_them_like_torch():
    from workloads.jobs.row_sparse import clip_grad_norm_

    g = torch.Generator().manual_seed(3)
    table, dense = torch.zeros(6, 3, requires_grad=True), torch.zeros(4, requires_grad=True)
    twin_table, twin_dense = torch.zeros(6, 3, requires_grad=True), torch.zeros(4, requires_grad=True)
    dense.grad = torch.randn(4, generator=g)
    table.grad = _sparse([2, 5, 2], torch.randn(3, 3, generator=g))
    twin_dense.grad, twin_table.grad = dense.grad.clone(), table.grad.to_dense()
    total = clip_grad_norm_([table, dense], 0.5)
    want = torch.nn.utils.clip_grad_norm_([twin_table, twin_dense], 0.5)
    torch.testing.assert_close(total, want)
    assert table.grad.is_sparse
    torch.testing.assert_close(table.grad.to_dense(), twin_table.grad)
    torch.testing.assert_close(dense.grad, twin_dense.grad)


@pytest.mark.parametrize("choice", ["sparse_adam", "rowwise_adagrad"])
def test_a_step_touches_and_decays_only_the_rows_of_the_batch_ids(choice):
    """An L3 layer with sparse table gradients and a row-sparse optimizer (weight decay on): after one
    step exactly the rows owned by the batch's ids have moved (and were decayed); every other row is
    bit-identical, where dense AdamW would have decayed all of them. The gradient never has a dense
    (rows, width) form."""
    from workloads.l3.layer import L3Layer

    torch.manual_seed(0)
    counts = [3, 1, 4, 2, 5, 1, 2]
    layer = L3Layer(8, counts, d_emb=6, d_up=10, impl="sorted", sparse_grad=True)
    tables = [layer.keys, layer.values]
    before = [t.detach().clone() for t in tables]
    ids = torch.tensor([[4, 1, 4, 6]])
    layer(torch.randn(1, 4, 8), ids).square().sum().backward()
    assert all(t.grad.is_sparse for t in tables)
    groups = [{"name": "l3_tables", "params": tables, "lr": 0.1, "weight_decay": 0.5}]
    optim.build_optimizer(groups, (0.9, 0.95), l3_optimizer=choice).step()
    owned = torch.zeros(sum(counts), dtype=torch.bool)
    for t in (1, 4, 6):
        owned[sum(counts[:t]) : sum(counts[: t + 1])] = True
    for table, old in zip(tables, before, strict=True):
        moved = (table.detach() != old).any(dim=1)
        assert torch.equal(moved, owned)
    if choice == "sparse_adam":  # the touched rows took AdamW's step, decay included
        twin = [old.clone().requires_grad_() for old in before]
        for t, real in zip(twin, tables, strict=True):
            t.grad = real.grad.to_dense()
        torch.optim.AdamW(twin, lr=0.1, betas=(0.9, 0.95), weight_decay=0.5).step()
        for t, real in zip(twin, tables, strict=True):
            torch.testing.assert_close(real.detach()[owned], t.detach()[owned], rtol=1e-6, atol=1e-7)
            assert not torch.equal(t.detach()[~owned], real.detach()[~owned])  # AdamW decays the rest


@pytest.mark.parametrize("fused", [None, True], ids=["default", "fused"])
def test_sparse_grad_adamw_steps_exactly_as_adamw_on_the_dense_gradient(fused):
    """Dense AdamW fed sparse gradients: bit-identical to torch's AdamW on the equal dense gradient (same
    kernel), rows never touched decay by (1 - lr·wd) per step (zero moments: no other move), and the kept
    gradient buffer is all zero again after every step."""
    from workloads.jobs.row_sparse import SparseGradAdamW

    dtype = torch.float32 if fused else torch.float64
    start = torch.randn(6, 3, generator=torch.Generator().manual_seed(4), dtype=dtype)
    a, b = start.clone().requires_grad_(), start.clone().requires_grad_()
    kw = {"lr": 0.1, "betas": (0.9, 0.95), "weight_decay": 0.1, "fused": fused}
    opt_a, opt_b = SparseGradAdamW([a], **kw), torch.optim.AdamW([b], **kw)
    for step in range(3):
        g = torch.randn(4, 3, generator=torch.Generator().manual_seed(step), dtype=dtype)
        a.grad = _sparse([4, 1, 4, 0], g)  # row 4 twice: its two pieces add
        b.grad = a.grad.to_dense()
        opt_a.step()
        opt_b.step()
        assert torch.equal(a, b)
        assert opt_a._grad_buffers[a].count_nonzero() == 0
    want = start[[2, 3, 5]] * (1 - 0.1 * 0.1) ** 3
    torch.testing.assert_close(a.detach()[[2, 3, 5]], want, rtol=1e-6, atol=0)
    assert opt_a.state_dict()["state"].keys() == opt_b.state_dict()["state"].keys()
    assert optim.optimizer_bytes(opt_a) == optim.optimizer_bytes(opt_b)  # the buffer is no state


def test_the_l3_tables_default_adamw_step_equals_the_dense_gradient_step():
    """The train job's default on one process: sparse table gradients into `build_optimizer`'s AdamW give
    the same tables as dense gradients into torch's AdamW (every row steps: AdamW decays them all)."""
    from workloads.l3.layer import L3Layer

    layers = []
    for sparse in (True, False):
        torch.manual_seed(0)
        layers.append(L3Layer(8, [3, 1, 4, 2, 5, 1, 2], d_emb=6, d_up=10, impl="sorted", sparse_grad=sparse))
    x, ids = torch.randn(2, 4, 8), torch.tensor([[4, 1, 4, 6], [0, 4, 4, 1]])
    for layer in layers:
        layer(x, ids).square().sum().backward()
    tables = [[layer.keys, layer.values] for layer in layers]
    assert all(t.grad.is_sparse for t in tables[0]) and not any(t.grad.is_sparse for t in tables[1])
    before = tables[1][0].detach().clone()
    for ts, make in ((tables[0], optim.build_optimizer), (tables[1], None)):
        groups = [{"name": "l3_tables", "params": ts, "lr": 0.1, "weight_decay": 0.5}]
        opt = (
            make(groups, (0.9, 0.95), True, "adamw", True)
            if make
            else torch.optim.AdamW(groups, betas=(0.9, 0.95), fused=True)
        )
        opt.step()
    for sparse_t, dense_t in zip(*tables, strict=True):
        torch.testing.assert_close(sparse_t, dense_t, rtol=0, atol=0)
    assert (tables[0][0].detach() != before).all(dim=1).all()  # every row moved, untouched ones too
    plain = optim.build_optimizer(groups, (0.9, 0.95), True)  # dense gradients (DDP, DeepSpeed)
    assert type(plain) is torch.optim.AdamW and plain.defaults["fused"]


def test_one_process_train_job_gives_the_tables_sparse_gradients_under_the_default_adamw(tmp_path_factory):
    from workloads.data import DataConfig
    from workloads.jobs.result import JobContext
    from workloads.jobs.row_sparse import SparseGradAdamW
    from workloads.jobs.train import TrainJobConfig, build_loop
    from workloads.l3.layer import L3Layer

    cfg = TrainJobConfig(preset="debug", family="l3", data=DataConfig(max_documents=50), seq_len=32,
                         batch_size=2, steps=2)  # fmt: skip
    job = build_loop(cfg, JobContext())
    layers = [m for m in job.model.modules() if isinstance(m, L3Layer)]
    assert layers and all(m.sparse_grad for m in layers)
    assert type(job.engine.optimizer) is SparseGradAdamW and job.engine.optimizer.defaults["fused"]
    job.step(0)
    assert all(m.keys.grad is None for m in layers)  # zeroed (set to None) after the step
    assert all(b.count_nonzero() == 0 for b in job.engine.optimizer._grad_buffers.values())

"""Row-sparse optimizers for the L3 tables (the `l3_optimizer` option of the train job).
Details: docs/workloads.md#workloadsjobsrow_sparse."""

from collections.abc import Iterable

import torch
from torch.optim import Optimizer


def touched_rows(grad: torch.Tensor) -> torch.Tensor:
    """(k,) indices of the rows of a (rows, width) dense gradient that are not all zero."""
    return grad.ne(0).any(dim=1).nonzero().squeeze(1)


def row_gradient(grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows (k,), their gradient rows (k, width)) of a dense or sparse COO (rows, width) gradient;
    a sparse one is coalesced (duplicate rows summed), a dense one scanned for nonzero rows."""
    if grad.is_sparse:
        g = grad.coalesce()
        return g.indices()[0], g.values()
    rows = touched_rows(grad)
    return rows, grad.index_select(0, rows)


@torch.no_grad()
def clip_grad_norm_(params: Iterable[torch.Tensor], max_norm: float) -> torch.Tensor:
    """`torch.nn.utils.clip_grad_norm_` (L2, foreach) that also takes sparse COO gradients (torch's
    raises on them): their coalesced values count once per row and are scaled in place."""
    params = [p for p in params if p.grad is not None]
    dense = [p.grad for p in params if not p.grad.is_sparse]
    with_sparse = [p for p in params if p.grad.is_sparse]
    sparse = [p.grad.coalesce() for p in with_sparse]
    norms = [torch.nn.utils.get_total_norm(dense, foreach=True)] if dense else []
    norms += [torch.linalg.vector_norm(g._values()) for g in sparse]
    if not norms:
        return torch.tensor(0.0)
    total = torch.linalg.vector_norm(torch.stack(norms))
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    if dense:
        torch._foreach_mul_(dense, coef.to(dense[0].device))
    for g in sparse:
        g._values().mul_(coef)
    for p, g in zip(with_sparse, sparse, strict=True):
        p.grad = g
    return total


class RowSparseAdam(Optimizer):
    """Lazy AdamW over table rows (see the module doc)."""

    def __init__(self, params: Iterable, lr: float, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay=0.0):
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0  # a Python int: no device read
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                step = state["step"]
                rows, g = row_gradient(p.grad)  # (k,), (k, width)
                m = state["exp_avg"].index_select(0, rows).mul_(b1).add_(g, alpha=1 - b1)
                v = state["exp_avg_sq"].index_select(0, rows).mul_(b2).addcmul_(g, g, value=1 - b2)
                state["exp_avg"].index_copy_(0, rows, m)
                state["exp_avg_sq"].index_copy_(0, rows, v)
                w = p.index_select(0, rows)
                if wd:
                    w.mul_(1 - lr * wd)
                denom = (v / (1 - b2**step)).sqrt_().add_(eps)
                w.addcdiv_(m, denom, value=-lr / (1 - b1**step))
                p.index_copy_(0, rows, w)


class RowwiseAdagrad(Optimizer):
    """Row-wise Adagrad (TorchRec's): one accumulator per row, sum over steps of mean(g_row²)."""

    def __init__(self, params: Iterable, lr: float, eps: float = 1e-8, weight_decay: float = 0.0):
        super().__init__(params, {"lr": lr, "eps": eps, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["sum"] = torch.zeros(p.shape[0], dtype=p.dtype, device=p.device)  # (rows,)
                rows, g = row_gradient(p.grad)  # (k,), (k, width)
                acc = state["sum"].index_select(0, rows).add_(g.pow(2).mean(dim=1))  # (k,)
                state["sum"].index_copy_(0, rows, acc)
                w = p.index_select(0, rows)
                if wd:
                    w.mul_(1 - lr * wd)
                w.addcdiv_(g, acc.sqrt_().add_(eps).unsqueeze(1), value=-lr)
                p.index_copy_(0, rows, w)


class SparseGradAdamW(torch.optim.AdamW):
    """torch's AdamW (its fused / foreach kernel) that also takes sparse COO gradients, for the default
    `l3_optimizer="adamw"` with the L3 tables' sparse_grad on. Each sparse gradient is added into a
    persistent all-zero (rows, width) buffer kept per parameter, AdamW steps on that dense gradient, and
    only the touched rows are zeroed again: the step is AdamW's on the equal dense gradient, every row
    included (exact AdamW cannot skip untouched rows: their moments decay and, through eps, their step
    has no closed form over skipped steps), but no (rows, width) gradient is allocated, zeroed (fresh
    pages fault in: tens of ms on the 2-core CPU) or scanned by the gradient clipping each step."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self._grad_buffers: dict[torch.Tensor, torch.Tensor] = {}  # gradients, not optimizer state

    @torch.no_grad()
    def step(self, closure=None):
        touched = []
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None or not p.grad.is_sparse:
                    continue
                buffer = self._grad_buffers.get(p)
                if buffer is None:
                    buffer = self._grad_buffers[p] = torch.zeros_like(p)
                rows = p.grad._indices()[0]  # (k,) uncoalesced: repeated rows add, as a coalesce would
                buffer.index_add_(0, rows, p.grad._values())
                p.grad = buffer
                touched.append((buffer, rows))
        loss = super().step(closure)
        for buffer, rows in touched:  # every other row of the buffer is still zero
            buffer.index_fill_(0, rows, 0.0)
        return loss


class MixedOptimizer(Optimizer):
    """Several optimizers over disjoint parameters, stepped, zeroed, saved and accounted as one."""

    def __init__(self, optimizers: list[Optimizer]):  # no super().__init__(): it owns no params itself
        self.optimizers = optimizers
        self.defaults = {}
        self._optimizer_step_pre_hooks, self._optimizer_step_post_hooks = {}, {}
        self._optimizer_state_dict_pre_hooks, self._optimizer_state_dict_post_hooks = {}, {}
        self._optimizer_load_state_dict_pre_hooks, self._optimizer_load_state_dict_post_hooks = {}, {}
        self._zero_grad_profile_name = "MixedOptimizer.zero_grad"

    @property
    def param_groups(self) -> list[dict]:  # the groups themselves: the lr scheduler edits them in place
        return [g for opt in self.optimizers for g in opt.param_groups]

    @property
    def state(self) -> dict:
        return {p: s for opt in self.optimizers for p, s in opt.state.items()}

    def step(self, closure=None):
        for opt in self.optimizers:
            opt.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {"optimizers": [opt.state_dict() for opt in self.optimizers]}

    def load_state_dict(self, state_dict: dict) -> None:
        for opt, sd in zip(self.optimizers, state_dict["optimizers"], strict=True):
            opt.load_state_dict(sd)

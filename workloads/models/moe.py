"""The MoE block: `deepspeed.moe.layer.MoE` (GShard-style top-k gate, capacity, all-to-all) over SwiGLU
experts.
Details: docs/workloads.md#workloadsmodelsmoe."""

import os
from typing import Literal

import torch
import torch.nn as nn

from workloads.models.config import MoEConfig
from workloads.models.moe_dropless import (
    HOST_GROUPING_MAX_ROUTES,
    aux_loss,
    dropless_host,
    dropless_sorted,
    route,
)

MoEImpl = Literal["deepspeed", "dropless"]


def choose_deepspeed_accelerator() -> None:
    """Tell DeepSpeed its accelerator before its first import (DS_ACCELERATOR; a user's value wins), so a
    CPU worker does not print DeepSpeed's "Setting accelerator to CPU" warning into every job log."""
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if torch.cuda.is_available() else "cpu")


def route_drops(gate_output: tuple, top_k: int) -> torch.Tensor:
    """(2,) int64 [tokens that lost all top_k routes, routes dropped] of one gate call (capacity limit).

    DeepSpeed's gate returns either a dense (S, E, C) dispatch mask (4-tuple: l_aux, combine_weights,
    dispatch_mask, exp_counts) or sparse routes (7-tuple: ..., indices (k, S) with -1 for an evicted route,
    ...). A token's k routes go to k distinct experts, so in the dense form its kept routes are the ones set
    in its (E, C) slice."""
    if len(gate_output) == 7:
        kept = gate_output[3] >= 0  # (k, S)
        n_routes = kept.numel()
        kept_per_token = kept.sum(0)  # (S,)
    elif len(gate_output) == 4:
        mask = gate_output[2]  # (S, E, C) bool
        kept_per_token = mask.flatten(1).sum(1)  # (S,)
        n_routes = top_k * mask.shape[0]
    else:
        raise ValueError(f"unexpected DeepSpeed gate output of {len(gate_output)} items")
    dropped_tokens = (kept_per_token == 0).sum()
    dropped_routes = n_routes - kept_per_token.sum()
    return torch.stack([dropped_tokens, dropped_routes]).to(torch.int64)


class MoEMLP(nn.Module):
    """Drop-in for the dense MLP of a block: (B, T, dim) -> ((B, T, dim), l_aux, exp_counts); given the
    block's `residual` (B, T, dim), the first item is residual + output (the serving path folds
    its gate weights into that add: `moe_dropless`).

    `expert` is one expert module (the SwiGLU MLP); DeepSpeed deep-copies it into each local expert slot,
    so each copy is re-initialised here (`reset_parameters`), otherwise every expert would start identical.
    exp_counts are this rank's pre-capacity routing counts, (num_experts,) int64: tokens routed, not kept.
    last_dropped: (2,) int64 [dropped tokens, dropped routes] of the last forward (`route_drops`), read
    from the gate's own dispatch by a forward hook; the training loop sums it per step.
    impl: "deepspeed" (training; DeepSpeed's capacity dispatch) or "dropless" (serving:
    `workloads.models.moe_dropless`, the same experts and router weights; `serve_dropless` switches a
    built model). The dropless path returns l_aux (and, at a few tokens, exp_counts) only while
    `record_balance` is set (they cost ops per call), else None; it drops nothing: last_dropped is zero.
    one_token: while serving dropless without recording, the (gate weight, experts, top_k) that a block
    hands `dropless_one_token` itself at batch 1; else None.
    """

    def __init__(self, dim: int, config: MoEConfig, expert: nn.Module):
        super().__init__()
        choose_deepspeed_accelerator()
        try:
            from deepspeed.moe.layer import MoE
        except ImportError as err:  # only MoE models need deepspeed
            raise ImportError(
                "MoE models need DeepSpeed: pip install --no-build-isolation deepspeed"
            ) from err
        self.config = config
        self.moe = MoE(
            hidden_size=dim,
            expert=expert,
            num_experts=config.num_experts,
            ep_size=config.ep_size,
            k=config.top_k,
            capacity_factor=config.capacity_factor,
            eval_capacity_factor=config.eval_capacity_factor,
            min_capacity=config.min_capacity,
            drop_tokens=config.drop_tokens,
            use_rts=config.use_rts,
            top2_2nd_expert_sampling=config.top2_sampling,
        )
        for local_expert in self.experts:
            local_expert.reset_parameters()
        self.last_dropped: torch.Tensor | None = None
        self.moe.deepspeed_moe.gate.register_forward_hook(self._record_drops)
        self.impl: MoEImpl = "deepspeed"
        self._record_balance = False
        self.one_token: tuple | None = None  # see `_refresh_serving`

    def _record_drops(self, _gate, _inputs, output) -> None:
        self.last_dropped = route_drops(output, self.config.top_k)

    @property
    def experts(self) -> nn.ModuleList:
        """This rank's experts (num_experts / ep_size of them)."""
        return self.moe.deepspeed_moe.experts.deepspeed_experts

    @property
    def gate(self) -> nn.Linear:
        """The router, (num_experts, dim); DeepSpeed computes the gate in float32 whatever its dtype."""
        return self.moe.deepspeed_moe.gate.wg

    def stacked_experts(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(slots (E,) int64, w1 (S, ffn, dim), w3 (S, ffn, dim), w2 (S, dim, ffn)) for the fused decode
        kernel: the S distinct expert modules' weights stacked, slot e running distinct module slots[e]
        (an aliased slot keeps its one copy: the bench's moe-1x control). Each expert's weights are
        re-pointed (`.data`) at its slice of the stacks, so the torch paths and the kernel read one copy."""
        distinct = {id(e): e for e in self.experts}  # in slot order of first appearance
        position = {key: i for i, key in enumerate(distinct)}
        slots = [position[id(e)] for e in self.experts]
        stacks = []
        for name in ("w1", "w3", "w2"):
            weights = [getattr(e, name).weight for e in distinct.values()]
            stacked = torch.stack([w.detach() for w in weights])
            for w, row in zip(weights, stacked, strict=True):
                w.data = row
            stacks.append(stacked)
        return (torch.tensor(slots, dtype=torch.int64), *stacks)

    def set_impl(self, impl: MoEImpl) -> None:
        if impl not in ("deepspeed", "dropless"):
            raise ValueError(f"MoE impl must be 'deepspeed' or 'dropless', got {impl!r}")
        if impl == "dropless" and self.config.ep_size > 1:
            raise ValueError(f"the dropless MoE path runs on one device; moe.ep_size={self.config.ep_size}")
        self.impl = impl
        self._refresh_serving()

    @property
    def record_balance(self) -> bool:
        return self._record_balance

    @record_balance.setter
    def record_balance(self, on: bool) -> None:
        self._record_balance = on
        self._refresh_serving()

    def _refresh_serving(self) -> None:
        """Plain references for the serving path (nn.Module attribute lookups cost µs per call at decode):
        `_served` (gate weight, experts, top_k), and `one_token`, the same while a batch-1 decode call may
        go straight to `dropless_one_token` (serving dropless, not recording balance), else None."""
        self._served = (self.gate.weight, list(self.experts), self.config.top_k)
        serving = self.impl == "dropless" and not self._record_balance
        self.one_token = self._served if serving else None

    def forward(
        self, x: torch.Tensor, residual: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        if self.impl == "deepspeed":
            out, l_aux, exp_counts = self._deepspeed(x)
        elif (
            self.one_token is not None
            and x.shape[0] * x.shape[1] * self.config.top_k <= HOST_GROUPING_MAX_ROUTES
        ):
            # serving (not recording balance): decode's few tokens are routed on the host (a block at
            # batch 1 goes straight to dropless_one_token instead)
            return dropless_host(x, *self.one_token, residual), None, None
        else:
            out, l_aux, exp_counts = self._dropless(x)
        return (out if residual is None else residual + out), l_aux, exp_counts

    def _deepspeed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n_tokens = x.shape[0] * x.shape[1]
        # DeepSpeed's top-1 gate asserts on this; say it in words (one-token decoding hits it first).
        if self.config.top_k == 1 and n_tokens < self.config.min_capacity:
            raise ValueError(
                f"MoE got {n_tokens} tokens but moe.min_capacity={self.config.min_capacity}; DeepSpeed's "
                "top-1 gate needs at least min_capacity tokens per call (set min_capacity <= the decode "
                "batch size)"
            )
        out, l_aux, exp_counts = self.moe(x)  # (B, T, dim), scalar, (num_experts,)
        return out, l_aux, exp_counts

    def _dropless(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        gate_weight, experts, top_k = self._served
        flat = x.reshape(-1, x.shape[-1])  # (N, dim)
        routes = route(flat, gate_weight, top_k)
        out, counts = dropless_sorted(flat, gate_weight, experts, top_k, routes)
        l_aux = None
        if self.record_balance:
            l_aux = aux_loss(flat, gate_weight, routes[1], top_k)
            self.last_dropped = torch.zeros(2, dtype=torch.int64)
        return out.view_as(x), l_aux, counts


def serve_dropless(model: nn.Module, impl: MoEImpl = "dropless") -> nn.Module:
    """Switch every MoE block of a built model to `impl` ("dropless" to serve); returns the model."""
    for module in model.modules():
        if isinstance(module, MoEMLP):
            module.set_impl(impl)
    return model

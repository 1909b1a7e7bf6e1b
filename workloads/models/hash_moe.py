"""Hash-routed MoE (Roller et al. 2021, "Hash Layers for Large Sparse Models"): the MoE block's experts, each
token sent by a fixed balanced hash of its token id. No router, no aux loss, no capacity, no drops.
Details: docs/workloads.md#workloadsmodelshash_moe."""

import copy

import torch
import torch.nn as nn

from workloads.models.config import MoEConfig

HASH_SEED = 0x5EED  # the hash is part of the architecture, not of a run: the same for every seed


def expert_hash(vocab_size: int, num_experts: int, top_k: int) -> torch.Tensor:
    """(top_k, vocab_size) int64: the expert of each token id under each of the k hashes."""
    if vocab_size < 1 or num_experts < 1 or top_k < 1:
        raise ValueError(f"vocab_size, num_experts, top_k must be >= 1, got {vocab_size, num_experts, top_k}")
    gen = torch.Generator().manual_seed(HASH_SEED)
    return torch.stack([torch.randperm(vocab_size, generator=gen) % num_experts for _ in range(top_k)])


class HashMoEMLP(nn.Module):
    """Drop-in for a block's MLP: ((B, T, dim), token ids (B, T)) -> ((B, T, dim), None, exp_counts).

    experts: num_experts SwiGLU MLPs (copies of `expert`, each re-initialised). exp_counts: (num_experts,)
    int64 routes per expert of the call (k per token). last_dropped is always zero (nothing is dropped);
    `record_balance` is accepted for the MoE interface and changes nothing (counts are always cheap).
    """

    def __init__(self, dim: int, config: MoEConfig, expert: nn.Module, vocab_size: int):
        super().__init__()
        self.config = config
        self.experts = nn.ModuleList(
            expert if i == 0 else copy.deepcopy(expert) for i in range(config.num_experts)
        )
        for e in self.experts:
            e.reset_parameters()
        self.register_buffer("hash", expert_hash(vocab_size, config.num_experts, config.top_k))  # (k, V)
        self.last_dropped = torch.zeros(2, dtype=torch.int64)
        self.record_balance = False

    def forward(self, x: torch.Tensor, token_ids: torch.Tensor) -> tuple[torch.Tensor, None, torch.Tensor]:
        flat = x.reshape(-1, x.shape[-1])  # (N, dim)
        routes = self.hash[:, token_ids.reshape(-1)]  # (k, N)
        out = torch.zeros_like(flat)
        for e, expert in enumerate(self.experts):
            hit = routes == e  # (k, N)
            uses = hit.sum(0)  # (N,) how many of the token's k hashes chose expert e
            rows = uses.nonzero().squeeze(1)
            if rows.numel():
                out.index_add_(0, rows, expert(flat[rows]) * uses[rows, None].to(flat.dtype))
        counts = torch.bincount(routes.reshape(-1), minlength=self.config.num_experts)
        return (out / self.config.top_k).view_as(x), None, counts

"""The decoder's attention: rotary position embeddings, the KV cache of incremental decoding, causal
grouped-query attention; and the dtype names and init std every module of `transformer` shares."""

import torch
import torch.nn as nn
import torch.nn.functional as F

from workloads.models.config import ModelConfig

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
INIT_STD = 0.02


def rope_angles(positions: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of the rotary angles, each (T, head_dim / 2) float32.

    Computed per forward instead of stored as a buffer, so `model.to(bfloat16)` never rounds them.
    """
    inv_freq = theta ** (
        -torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim
    )
    angles = positions.float()[:, None] * inv_freq[None, :]  # (T, head_dim / 2)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, H, T, head_dim) by position; the two halves of head_dim form the rotated pairs."""
    x1, x2 = x.float().chunk(2, dim=-1)  # (B, H, T, head_dim / 2) each, in float32 for accuracy
    out = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return out.type_as(x)


class KVCache:
    """Keys and values of every layer for incremental decoding, each (B, n_kv_heads, max_seq_len, head_dim).

    Usage: `cache = model.new_cache(B)`; `model(prompt, cache)`; then `model(next_ids, cache, start_pos=t)`.
    Positions [0, start_pos) must already be filled by earlier calls.
    """

    def __init__(
        self, config: ModelConfig, batch_size: int, max_seq_len: int | None = None, *, device=None, dtype=None
    ):
        self.max_seq_len = max_seq_len or config.max_seq_len
        if self.max_seq_len > config.max_seq_len:
            raise ValueError(
                f"cache max_seq_len={self.max_seq_len} exceeds model.max_seq_len={config.max_seq_len}"
            )
        shape = (batch_size, config.n_kv_heads, self.max_seq_len, config.head_dim)
        dtype = dtype or TORCH_DTYPES[config.dtype]
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layers)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layers)]

    def update(self, layer: int, start_pos: int, k: torch.Tensor, v: torch.Tensor):
        """Store (B, n_kv, T, hd) at [start_pos, start_pos + T); return all keys/values up to there."""
        end = start_pos + k.shape[2]
        self.k[layer][:, :, start_pos:end] = k
        self.v[layer][:, :, start_pos:end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]


class Attention(nn.Module):
    """Causal grouped-query self-attention through `F.scaled_dot_product_attention`."""

    def __init__(self, config: ModelConfig, layer: int, out_std: float):
        super().__init__()
        self.layer, self.head_dim = layer, config.head_dim
        self.n_heads, self.n_kv_heads = config.n_heads, config.n_kv_heads
        self.wq = nn.Linear(config.dim, config.n_heads * self.head_dim, bias=False)
        self.wk = nn.Linear(config.dim, config.n_kv_heads * self.head_dim, bias=False)
        self.wv = nn.Linear(config.dim, config.n_kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(config.n_heads * self.head_dim, config.dim, bias=False)
        for lin in (self.wq, self.wk, self.wv):
            nn.init.normal_(lin.weight, std=INIT_STD)
        nn.init.normal_(self.wo.weight, std=out_std)

    def forward(self, x, cos, sin, cache: KVCache | None, start_pos: int) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.wq(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, hd)
        k = self.wk(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, Hkv, T, hd)
        v = self.wv(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, Hkv, T, hd)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.update(self.layer, start_pos, k, v)  # (B, Hkv, start_pos + T, hd)
        S = k.shape[2]
        mask, is_causal = None, T > 1 and S == T
        if T > 1 and S > T:
            # Chunked prefill after cached positions: query i (position start_pos + i) sees keys <= it.
            # is_causal would align the triangle top-left, which is wrong when S != T.
            mask = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(diagonal=S - T)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, enable_gqa=True)
        return self.wo(y.transpose(1, 2).reshape(B, T, -1))  # (B, T, D)

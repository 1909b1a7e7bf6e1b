"""The spec of the fused decode kernels (`cpu.py`), in plain torch ops: h (N, dim) -> h + the sublayer.
The models' own forwards (FeedForward, the dropless MoE) compute the same; tests hold all three equal."""

import torch
import torch.nn.functional as F


def swiglu(x: torch.Tensor, w1: torch.Tensor, w3: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """w2 · (silu(w1 · x) ⊙ (w3 · x)) for each row of x."""
    return F.linear(F.silu(F.linear(x, w1)) * F.linear(x, w3), w2)


def dense(h, norm_weight, eps, w1, w3, w2) -> torch.Tensor:
    """h + SwiGLU(RMSNorm(h))."""
    return h + swiglu(F.rms_norm(h, h.shape[-1:], norm_weight, eps), w1, w3, w2)


def moe(h, norm_weight, eps, gate, w1, w3, w2, top_k: int) -> torch.Tensor:
    """h + Σ_j weight_j · expert_{e_j}(x), x = RMSNorm(h), over each row's top_k experts of softmax(gate · x)
    (the first of tied logits first): top-1 weighs its expert by its probability, top-k ≥ 2 by the
    probabilities renormalized over the chosen (DeepSpeed's gates). w1, w3 (E, ffn, dim), w2 (E, dim, ffn)."""
    x = F.rms_norm(h, h.shape[-1:], norm_weight, eps)
    probs = F.softmax(F.linear(x, gate), dim=-1)
    out = h.clone()
    for p, row in enumerate(probs.tolist()):
        order = sorted(range(len(row)), key=lambda e: (-row[e], e))[:top_k]
        chosen = probs[p, order]
        weights = chosen if top_k == 1 else chosen / chosen.sum()
        for e, w in zip(order, weights, strict=True):
            out[p] += w * swiglu(x[p : p + 1], w1[e], w3[e], w2[e])[0]
    return out

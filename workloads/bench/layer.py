"""Section `layer`: the L3 sublayer next to an iso-active SwiGLU MLP, inference at a few positions and
forward+backward over a batch, on the built-in corpus (dim 256, vocab 8192, 65,536 rows, cap 512, LZW
counts; positions are consecutive validation tokens, a new window every call).
Details: docs/workloads.md#workloadsbenchlayer."""

import functools
from dataclasses import replace

import numpy as np
import torch
import torch.nn as nn

from workloads.bench.rows import BASELINE, COMPARISON, BenchContext, Row, interleaved, timed_row
from workloads.data.config import DataConfig
from workloads.data.pipeline import prepare
from workloads.kernels.mlp_decode import cpu as mlp_cpu
from workloads.l3.allocation import allocate_from_counts, count_phrases
from workloads.l3.layer import L3Layer
from workloads.models.accounting import mlp_params
from workloads.models.transformer import FeedForward

DIM, VOCAB, BUDGET, CAP = 256, 8192, 65536, 512
ONE_POSITION_GOAL = 1.3  # L3 sublayer time ÷ iso-active MLP time, at 1 position (issue 21)


@functools.cache
def l3_setup(seq_len: int = 512):
    """(prepared data, LZW counts) of the built-in corpus, cached per process."""
    data = prepare(DataConfig(vocab_size=VOCAB, seq_len=seq_len))
    counts = allocate_from_counts(count_phrases(data.allocation_sequences(), data.vocab_size), BUDGET, CAP)
    return data, counts


class MLPSublayer(nn.Module):
    """h + SwiGLU(RMSNorm(h)): a block's MLP sublayer as a served block runs it (`Block.serve`), the fused
    decode kernel where the block would take it (`mlp_cpu.runs`), else torch's ops. The L3 sublayer it is
    compared with has its own norms and residual add, so both rows time a whole sublayer."""

    def __init__(self, ffn_dim: int):
        super().__init__()
        self.norm, self.ffn = nn.RMSNorm(DIM, eps=1e-5), FeedForward(DIM, ffn_dim)
        weights = (self.norm.weight, self.ffn.w1.weight, self.ffn.w3.weight, self.ffn.w2.weight)
        self.tables = mlp_cpu.dense_tables(self.norm, *weights[1:]) if mlp_cpu.available(*weights) else None

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.tables is not None and mlp_cpu.runs(h, self.tables):
            return mlp_cpu.run(h, self.tables)
        return h + self.ffn(self.norm(h))


def l3_and_mlp() -> tuple:
    """(prepared data, the L3 sublayer on its LZW counts, the iso-active MLP sublayer): eval mode, seeded."""
    torch.manual_seed(0)
    data, counts = l3_setup()
    # As a Transformer block builds it and the infer job serves it (the MLP beside it checks nothing either)
    layer = L3Layer(DIM, counts, DIM // 2, 4 * DIM, check_ids=False, check_inputs=False).eval().serve()
    active = l3_active_params(layer, data.token_freqs[: data.vocab_size].astype(np.float64))
    return data, layer, MLPSublayer(max(1, round(active / (3 * DIM)))).eval()


def l3_active_params(layer: L3Layer, token_freqs: np.ndarray) -> float:
    """Active parameters per token (L3_SPEC §5): frequency-weighted rows × row width, plus the dense part."""
    counts = layer.counts().numpy().astype(np.float64)
    mean_rows = float((counts * token_freqs).sum() / token_freqs.sum())
    return mean_rows * _row_width(layer) + _dense_params(layer)


def _row_width(layer: L3Layer) -> int:
    return layer.dim if layer.tied else layer.dim + layer.d_emb


def _dense_params(layer: L3Layer) -> int:
    return sum(p.numel() for name, p in layer.named_parameters() if name not in ("keys", "values"))


def l3_moved(layer: L3Layer, ids: torch.Tensor, backward: bool = False) -> tuple[float, float]:
    """(bytes, FLOPs) of one L3 call over `ids`: the distinct ids' rows (read once) and the dense weights;
    FLOPs 2·(pairs·row width + tokens·dense params); fwd+bwd: rows and weights read twice, their
    gradients written once, FLOPs ×3."""
    counts = layer.counts()
    element = layer.keys.element_size()
    rows_read = float(counts[ids.reshape(-1).unique()].sum()) * _row_width(layer) * element
    pairs = float(counts[ids.reshape(-1)].sum())
    dense = _dense_params(layer)
    flops = 2.0 * (pairs * _row_width(layer) + ids.numel() * dense)
    nbytes = rows_read + dense * element
    return (3 * nbytes, 3 * flops) if backward else (nbytes, flops)


def mlp_moved(mlp: MLPSublayer, n_tokens: int, backward: bool = False) -> tuple[float, float]:
    """(bytes, FLOPs) of an MLP sublayer call: its SwiGLU weights once (fwd+bwd: read twice, gradients
    written once); the norm's weight and the residual add are a rounding error beside them."""
    params = mlp_params(mlp.ffn.w1.in_features, mlp.ffn.w1.out_features)
    element = mlp.ffn.w1.weight.element_size()
    nbytes, flops = float(params * element), 2.0 * params * n_tokens
    return (3 * nbytes, 3 * flops) if backward else (nbytes, flops)


def _windows(data, n: int, count: int = 16) -> list[torch.Tensor]:
    val = torch.from_numpy(data.val.tokens.astype(np.int64))
    return [val[1000 + 997 * k : 1000 + 997 * k + n].view(1, n) for k in range(count)]


def _cycle(fn, items):
    state = {"k": 0}

    def call():
        state["k"] = (state["k"] + 1) % len(items)
        return fn(items[state["k"]])

    return call


def rows(ctx: BenchContext) -> list[Row]:
    data, layer, mlp = l3_and_mlp()
    out: list[Row] = []
    for n in (1, 8) if ctx.quick else (1, 8, 64):
        windows, x = _windows(data, n), torch.randn(1, n, DIM)
        fns = {"l3": _cycle(lambda ids, x=x: layer(x, ids), windows), "mlp": lambda x=x: mlp(x)}
        with torch.no_grad():
            s = interleaved(fns, ctx.rounds, inner=5 if ctx.quick else 20)
        l3_bytes, l3_flops = np.mean([l3_moved(layer, w) for w in windows], axis=0)  # a call reads one window
        mlp_row = timed_row(
            "layer",
            f"mlp {n} pos",
            s["mlp"],
            ctx.probe,
            items=n,
            **dict(zip(("nbytes", "flops"), mlp_moved(mlp, n), strict=True)),
        )
        l3_row = timed_row("layer", f"l3 {n} pos", s["l3"], ctx.probe, nbytes=l3_bytes, flops=l3_flops)
        out += [mlp_row.without_goal(BASELINE), vs_mlp(replace(l3_row, items=n), mlp_row, n)]
    B, T = (2, 128) if ctx.quick else (8, 512)
    ids = torch.from_numpy(data.val.tokens[: B * T].astype(np.int64)).view(B, T)
    x = torch.randn(B, T, DIM)

    def fwd_bwd(module, *args):
        xx = x.detach().requires_grad_()
        module(xx, *args).sum().backward()
        module.zero_grad(set_to_none=True)

    s = interleaved({"l3": lambda: fwd_bwd(layer, ids), "mlp": lambda: fwd_bwd(mlp)}, max(3, ctx.rounds // 2))
    l3_b, l3_f = l3_moved(layer, ids, backward=True)
    mlp_b, mlp_f = mlp_moved(mlp, B * T, backward=True)
    fb = {
        name: replace(
            timed_row("layer", f"{name} fwd+bwd {B}×{T}", s[name], ctx.probe, nbytes=nbytes, flops=flops),
            items=B * T,
        )
        for name, (nbytes, flops) in (("mlp", (mlp_b, mlp_f)), ("l3", (l3_b, l3_f)))
    }
    return [*out, fb["mlp"].without_goal(BASELINE), vs_mlp(fb["l3"], fb["mlp"], B * T)]


def vs_mlp(l3_row: Row, mlp_row: Row, positions: int) -> Row:
    """`l3_row` with its time ÷ the MLP's: the goal ≤ ONE_POSITION_GOAL at 1 position, else for comparison."""
    times = l3_row.median_s / mlp_row.median_s
    if positions == 1:
        return l3_row.with_goal(f"≤{ONE_POSITION_GOAL:g}× mlp time", times <= ONE_POSITION_GOAL, times)
    return replace(l3_row, value=times, note="value: L3 ÷ MLP time").without_goal(COMPARISON)

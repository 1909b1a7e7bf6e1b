"""Small-batch L3 benchmark: `python -m workloads.l3.bench_small` prints the L3 sublayer's inference
time ÷ an iso-active SwiGLU MLP at a few positions (decode, short prompts), and the host reads per L3
call (forward and backward) at each size.

Setup as `workloads.l3.bench` (dim 256, vocab 8192, 65,536 rows, cap 512, LZW counts of the built-in
corpus; positions are consecutive validation tokens). The layer runs as inside the Transformer
(`check_ids=False`); each call takes the next of 16 windows of consecutive validation tokens, so one
frequent (cap-row) token does not set the result. Variants are interleaved in rounds; each round's
time per call is the mean of `--inner` calls; the table reports medians over rounds and their ratio.
Goal (issue 15): L3 ÷ MLP ≤ 1.5× at 1, 8 and 64 positions.
"""

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from workloads.data.config import DataConfig
from workloads.data.pipeline import prepare
from workloads.l3.allocation import allocate_from_counts, count_phrases
from workloads.l3.bench import SwiGLU, l3_active_params
from workloads.l3.host_reads import count_host_reads
from workloads.l3.layer import L3Layer


def interleaved(fns: dict[str, Callable[[], object]], rounds: int, inner: int) -> dict[str, list[float]]:
    """Seconds per call of each fn, one sample per round; the fns alternate within every round."""
    for fn in fns.values():  # warm-up
        fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            samples[name].append((time.perf_counter() - t0) / inner)
    return samples


def host_reads(layer: L3Layer, x: torch.Tensor, ids: torch.Tensor) -> tuple[int, int]:
    """(forward, backward) host reads of one L3 call with grad."""
    xx = x.detach().requires_grad_()
    with count_host_reads() as fwd:
        out = layer(xx, ids)
    with count_host_reads() as bwd:
        out.sum().backward()
    layer.zero_grad(set_to_none=True)
    return sum(fwd.values()), sum(bwd.values())


def _args(argv):
    prog, doc = "python -m workloads.l3.bench_small", __doc__.splitlines()[0]
    p = argparse.ArgumentParser(prog=prog, description=doc)
    p.add_argument("--positions", type=int, nargs="+", default=[1, 8, 64, 128, 512])
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--budget", type=int, default=65536)
    p.add_argument("--cap", type=int, default=512)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--inner", type=int, default=20)
    p.add_argument("--threads", type=int, default=None)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = _args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    data = prepare(DataConfig(vocab_size=args.vocab, seq_len=512))
    vocab = data.vocab_size
    counts = allocate_from_counts(count_phrases(data.allocation_sequences(), vocab), args.budget, args.cap)
    layer = L3Layer(args.dim, counts, args.dim // 2, 4 * args.dim, check_ids=False).eval()
    active = l3_active_params(layer, data.token_freqs[:vocab].astype(np.float64))
    mlp = SwiGLU(args.dim, max(1, round(active / (3 * args.dim)))).eval()
    val = torch.from_numpy(data.val.tokens.astype(np.int64))
    table = Table(
        title=f"L3 sublayer vs iso-active SwiGLU (ffn {mlp.w1.out_features}), inference, dim {args.dim}, "
        f"{args.budget} rows, cap {args.cap}; median µs per call over {args.rounds} interleaved rounds"
    )
    cols = ("positions", "rows/pos", "L3 auto", "L3 small", "L3 sorted", "MLP", "auto ÷ MLP", "reads fwd/bwd")
    for col in cols:
        table.add_column(col, justify="right")
    for n in args.positions:
        windows = [val[1000 + 997 * k : 1000 + 997 * k + n].view(1, n) for k in range(16)]
        x = torch.randn(1, n, args.dim)
        variants = {"auto": "auto", "small": "small", "sorted": "sorted"}

        def call(impl: str, x=x, windows=windows) -> Callable[[], object]:
            state = {"k": 0}

            def run():
                layer.impl = impl
                state["k"] = (state["k"] + 1) % len(windows)
                return layer(x, windows[state["k"]])

            return run

        fns = {name: call(impl) for name, impl in variants.items()}
        fns["mlp"] = lambda x=x: mlp(x)
        with torch.no_grad():
            samples = interleaved(fns, args.rounds, args.inner)
        med = {k: statistics.median(v) for k, v in samples.items()}
        layer.impl = "auto"
        reads = host_reads(layer, x, windows[0])
        rows = float(layer.counts()[torch.cat(windows).view(-1)].double().mean())
        us = {k: f"{v * 1e6:,.0f}" for k, v in med.items()}
        ratio = med["auto"] / med["mlp"]
        table.add_row(
            str(n), f"{rows:.0f}", us["auto"], us["small"], us["sorted"], us["mlp"], f"{ratio:.2f}×",
            f"{reads[0]} / {reads[1]}",
        )  # fmt: skip
    Console(width=160).print(table)
    print(f"torch threads {torch.get_num_threads()}")


if __name__ == "__main__":
    main()

"""Inside the fused L3 sublayer kernel (`kernels/l3_lookup/sublayer_cpu.py`), which torch.profiler sees as
one call: each of its numba stages called alone on the same inputs, interleaved, beside the bytes it must
read and its floor, and the whole kernel (serial and parallel) for comparison. Part of the profile."""

import itertools

import numpy as np
import torch
from rich import box
from rich.table import Table

from workloads.kernels.l3_lookup import sublayer_cpu as sc
from workloads.l3.layer import L3Layer
from workloads.probe import MachineProbe


def stage_calls(layer: L3Layer, windows: list[torch.Tensor], x: torch.Tensor, parallel: bool) -> dict:
    """{stage: (call, bytes it must read)} for 1-position inputs `x` (1, 1, dim), cycling `windows`."""
    xn = x.reshape(1, -1).numpy()
    keys, values, offsets = (t.detach().numpy() for t in (layer.keys, layer.value_table, layer.offsets))
    w_in, w_up = layer.norm_in.weight.detach().numpy(), layer.up.weight.detach().numpy()
    w_out, w_mix = layer.norm_out.weight.detach().numpy(), layer.mix.weight.detach().numpy()
    eps_in, eps_out = layer.norm_in.eps, layer.norm_out.eps
    ids = [w.reshape(-1).numpy().astype(np.int64) for w in windows]
    k = itertools.cycle(range(len(ids)))
    lookup = sc._lookup_parallel if parallel else sc._lookup_serial
    gemv = sc._gemv_parallel if parallel else sc._gemv_serial
    q, looked = sc._dense_in_jit(xn, w_in, eps_in, values.shape[1])
    ux, out = sc._mix_input_jit(xn, w_up.shape[0]), np.empty_like(xn)  # [u | x]
    u, counts = ux[:, : w_up.shape[0]], layer.counts().numpy()
    row_bytes = float(np.mean([counts[i].sum() for i in ids])) * (keys.shape[1] + values.shape[1]) * 4
    whole = sc._parallel if parallel else sc._serial

    def kernel():
        whole(
            xn,
            ids[next(k)],
            keys,
            values,
            offsets,
            w_in,
            eps_in,
            w_up,
            w_out,
            eps_out,
            w_mix,
            layer.residual,
            out,
        )

    return {
        "RMSNorm_in": (lambda: sc._dense_in_jit(xn, w_in, eps_in, values.shape[1]), xn.nbytes + w_in.nbytes),
        "lookup": (lambda: lookup(q, ids[next(k)], keys, values, offsets, looked, sc.CHUNK_ROWS), row_bytes),
        "W_up": (lambda: gemv(w_up, looked, u), w_up.nbytes),
        "RMSNorm_out": (lambda: sc._rms_norm_jit(u, w_out, eps_out, u), u.nbytes + w_out.nbytes),
        "W_mix · [u | x]": (lambda: gemv(w_mix, ux, out), w_mix.nbytes),
        "whole kernel": (kernel, row_bytes + w_in.nbytes + w_up.nbytes + w_out.nbytes + w_mix.nbytes),
    }


def stages_table(times_s: dict[str, float], nbytes: dict[str, float], pr: MachineProbe) -> Table:
    """Stage | µs | MB | GB/s | % of floor (bytes at the read rate of the stage's bytes)."""
    t = Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1))
    for col in ("kernel stage", "µs", "MB", "GB/s", "floor"):
        t.add_column(col, justify="left" if col == "kernel stage" else "right")
    for name, s in times_s.items():
        b = nbytes[name]
        floor = pr.floor_s(b, 0.0)
        t.add_row(name, f"{1e6 * s:,.1f}", f"{b / 1e6:.3f}", f"{b / s / 1e9:.1f}", f"{100 * floor / s:.0f}%")
    return t

"""L3 lookup on the device: every fast path against the reference (fwd + grads, fp32 + bf16), and the
Triton kernels' bandwidth.
Details: docs/workloads.md#workloadsgpu_checklookup_checks."""

import numpy as np
import torch

from workloads.jobs.timing import StepTimer
from workloads.kernels.l3_lookup.op import IMPL_NAMES, l3_lookup


def zipf_counts(vocab: int, budget: int, cap: int) -> np.ndarray:
    """(vocab,) rows per token, each in [1, cap], summing to `budget`, Zipf-shaped and nonincreasing in
    the id: with `zipf_ids`, frequent ids own the most rows, as the LZW allocation gives them (the
    lookup's costliest case). Needs vocab ≤ budget ≤ vocab·cap."""
    if not vocab <= budget <= vocab * cap:
        raise ValueError(f"budget {budget} must lie in [vocab, vocab·cap] = [{vocab}, {vocab * cap}]")
    p = 1.0 / np.arange(1, vocab + 1)
    counts = np.minimum(cap, 1 + np.floor((budget - vocab) * p / p.sum())).astype(np.int64)
    while (left := budget - int(counts.sum())) > 0:  # hand the remainder to the most frequent open ids
        open_ids = np.flatnonzero(counts < cap)[:left]
        counts[open_ids] += 1
    return counts


def zipf_ids(vocab: int, n: int, seed: int) -> np.ndarray:
    """(n,) token ids with Zipf(1) frequencies: id 0 the most frequent."""
    p = 1.0 / np.arange(1, vocab + 1)
    return np.random.default_rng(seed).choice(vocab, size=n, p=p / p.sum())


class LookupCase:
    """Inputs of one lookup on a device: ids, offsets, q, keys, values (tied: values is keys)."""

    def __init__(self, counts, ids, dim: int, d_emb: int, device, dtype, tied: bool = False, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.counts = np.asarray(counts)
        self.offsets = torch.from_numpy(np.concatenate([[0], np.cumsum(counts)])).to(device)
        self.ids = torch.as_tensor(np.asarray(ids), dtype=torch.int64).to(device)
        v = int(self.counts.sum())
        self.q = torch.randn(len(ids), dim, generator=g).to(device, dtype)
        self.keys = (torch.randn(v, dim, generator=g) * dim**-0.5 * 3).to(device, dtype)
        self.values = self.keys if tied else torch.randn(v, d_emb, generator=g).to(device, dtype)
        self.grad_out = torch.randn(len(ids), d_emb, generator=g).to(device, dtype)

    def leaves(self, dtype=None) -> list[torch.Tensor]:
        tensors = [self.q, self.keys] if self.values is self.keys else [self.q, self.keys, self.values]
        return [t.detach().to(dtype or t.dtype).requires_grad_() for t in tensors]

    def run(self, impl: str, dtype=None) -> list[torch.Tensor]:
        """[output, dq, dkeys(, dvalues)] of `impl` (or "triton-atomics") on the inputs cast to `dtype`."""
        leaves = self.leaves(dtype)
        values = leaves[1] if len(leaves) == 2 else leaves[2]
        out = lookup(impl, leaves[0], self.ids, leaves[1], values, self.offsets)
        grads = torch.autograd.grad(out, leaves, self.grad_out.to(out.dtype))
        return [out.detach(), *grads]


ATOMICS = "triton-atomics"  # the Triton impl with its non-deterministic (atomics) table backward


def lookup(impl: str, q, ids, keys, values, offsets) -> torch.Tensor:
    """`l3_lookup` with `impl`, or the Triton impl in its atomics mode for ATOMICS."""
    if impl == ATOMICS:
        from workloads.kernels.l3_lookup.triton import l3_lookup_triton

        return l3_lookup_triton(q, ids, keys, values, offsets, deterministic=False)
    return l3_lookup(q, ids, keys, values, offsets, impl)


def fast_impls() -> list[str]:
    """Every registered path except the reference itself and `auto` (which resolves to one of them),
    and the Triton impl's atomics mode."""
    return [name for name in IMPL_NAMES if name not in ("auto", "reference")] + [ATOMICS]


def correctness(device, small: bool) -> list[dict]:
    """Max |error| / max |reference| of output and each gradient, per impl × dtype × tied, against the
    float64 reference on the same (rounded) inputs; and whether a second run is bitwise identical
    (expected of every path but the atomics mode)."""
    vocab, n, dim, d_emb = (8, 16, 8, 6) if small else (96, 1024, 128, 64)
    budget = vocab * (8 if small else 40)
    rows = []
    for tied in (False, True):
        counts = zipf_counts(vocab, budget, 512)
        counts[0] = 100 if small else 512  # the most frequent id owns many rows (at the cap on a GPU)
        ids = zipf_ids(vocab, n, seed=2)
        for dtype, tol in ((torch.float32, 1e-4), (torch.bfloat16, 3e-2)):
            case = LookupCase(counts, ids, dim, dim if tied else d_emb, device, dtype, tied, seed=3)
            want = case.run("reference", torch.float64)
            rows += [_compare(case, impl, want, tol, tied) for impl in fast_impls()]
    return rows


def _compare(case: LookupCase, impl: str, want: list[torch.Tensor], tol: float, tied: bool) -> dict:
    got = case.run(impl)
    errors = [
        float((a.double() - b).abs().max() / b.abs().max().clamp_min(1e-30))
        for a, b in zip(got, want, strict=True)
    ]
    repeatable = all(torch.equal(a, b) for a, b in zip(got, case.run(impl), strict=True))
    return {
        "impl": impl,
        "dtype": str(case.q.dtype).removeprefix("torch."),
        "tied": tied,
        "max_rel_error": max(errors),
        "per_tensor": errors,
        "tolerance": tol,
        "ok": max(errors) <= tol,
        "repeatable": repeatable,
    }


def _row_bytes(case: LookupCase) -> int:
    return case.keys.shape[1] * case.keys.element_size() + case.values.shape[1] * case.values.element_size()


def bandwidth(device, small: bool, peak_bytes_per_s: float | None, repeats: int, warmup: int) -> list[dict]:
    """Triton lookup fwd and bwd logical GB/s (formula in the module doc) at the `small` preset's L3
    shape (dim 512, d_emb 256, 128K rows, 8×1024 positions), per dtype; the sorted path alongside."""
    vocab, budget, n, dim, d_emb = (16, 128, 64, 16, 8) if small else (32768, 131072, 8192, 512, 256)
    counts = zipf_counts(vocab, budget, 512)
    ids = zipf_ids(vocab, n, seed=5)
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        case = LookupCase(counts, ids, dim, d_emb, device, dtype, seed=6)
        per_pos = int(counts[ids].sum()) * _row_bytes(case)
        distinct = int(counts[np.unique(ids)].sum()) * _row_bytes(case)
        io = n * (dim + d_emb) * case.q.element_size()
        fwd_bytes = per_pos + io
        bwd_bytes = 2 * per_pos + distinct + int(counts.sum()) * _row_bytes(case) + 2 * io
        for impl in ("triton", ATOMICS, "sorted"):
            fwd_s, bwd_s = _time_lookup(case, impl, device, repeats, warmup)
            for phase, nbytes, seconds in (("fwd", fwd_bytes, fwd_s), ("bwd", bwd_bytes, bwd_s)):
                gbps = nbytes / seconds / 1e9
                rows.append(
                    {
                        "impl": impl,
                        "dtype": str(dtype).removeprefix("torch."),
                        "phase": phase,
                        "bytes": nbytes,
                        "median_s": seconds,
                        "gb_per_s": gbps,
                        "frac_of_peak": gbps * 1e9 / peak_bytes_per_s if peak_bytes_per_s else None,
                    }
                )
    return rows


def _time_lookup(case: LookupCase, impl: str, device, repeats: int, warmup: int) -> tuple[float, float]:
    """Median seconds of the forward alone and of the backward alone (warm-up excluded)."""
    fwd, bwd = StepTimer(device, warmup=warmup), StepTimer(device, warmup=warmup)
    q, keys, values = case.leaves()
    for _ in range(repeats + warmup):
        with fwd:
            out = lookup(impl, q, case.ids, keys, values, case.offsets)
        with bwd:
            torch.autograd.grad(out, [q, keys, values], case.grad_out.to(out.dtype))
    return fwd.summary().median_s, bwd.summary().median_s

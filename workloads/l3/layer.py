"""The Large Lookup Layer (L3, Tseng & De Sa 2026; L3_SPEC §1).
Details: docs/workloads.md#workloadsl3layer."""

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch
import torch.nn as nn

from workloads.kernels.l3_lookup import sublayer_cpu
from workloads.kernels.l3_lookup.op import IMPL_NAMES, LookupImpl, l3_lookup

# Integer dtypes whose range check (aminmax) and widening to int64 work on every device.
_ID_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


class LookupTables(NamedTuple):
    """What one lookup computes with: `ids` index `offsets`, whose ranges index rows of keys/values."""

    ids: torch.Tensor  # (N,) int64
    keys: torch.Tensor  # (rows, dim)
    values: torch.Tensor  # (rows, d_emb); the same tensor as keys when tied
    offsets: torch.Tensor  # (n_ids + 1,) int64


def _offsets_from_counts(counts) -> torch.Tensor:
    """(vocab + 1,) int64 prefix sums of per-token row counts, after validating them."""
    arr = np.asarray(counts.cpu() if isinstance(counts, torch.Tensor) else counts)
    if arr.ndim != 1 or arr.shape[0] < 1:
        raise ValueError(f"counts must be a non-empty 1-D sequence of row counts, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"counts must be integers, got dtype {arr.dtype}")
    if arr.min() < 1:
        bad = int(np.argmin(arr))
        raise ValueError(f"counts[{bad}] = {int(arr[bad])}: every token must own at least 1 row")
    offsets = np.zeros(arr.shape[0] + 1, dtype=np.int64)
    np.cumsum(arr, out=offsets[1:])
    return torch.from_numpy(offsets)


class L3Layer(nn.Module):
    """One L3 sublayer with its own key/value tables.

    Args:
        dim: hidden size d of the residual stream.
        counts: rows per token d_t (length = vocab size, each ≥ 1), e.g. from `lzw_allocate`.
        d_emb: value-row width (must equal `dim` when `tied`).
        d_up: width of W_up's output.
        tied: use `keys` as values too (W_K = W_V); halves the sparse parameters.
        residual: return `x + L3(x)` instead of `L3(x)` (the paper's form is not public; L3_SPEC §1).
        impl: "auto" (Triton on CUDA when it imports, else "small" for a few positions and "sorted"
            above; CPU inference at ≤ 8 positions runs the whole sublayer as one numba call,
            kernels/l3_lookup/sublayer_cpu.py), "sorted" (block-diagonal pure torch), "small"
            (per-position: numba kernel on CPU without grad, else a padded gather), "triton"
            (kernels/l3_lookup/triton.py) or "reference" (per-position loop, the spec).
        check_ids: check on every call that the ids lie in [0, vocab) (one host read). The Transformer
            turns it off: its token embedding rejects such ids first, and the jobs validate the ids
            where they enter (batch loader, prompts), keeping the per-call host reads to the lookup's.
        check_inputs: check x's and the ids' shapes and dtypes on every call. The Transformer turns it off:
            its blocks hand the layer their own (B, T, dim) stream and (B, T) ids.
        init_std: std of the normal init of `keys`/`values` (and of W_mix's lookup block).
        sparse_grad: give `keys`/`values` sparse COO gradients over the rows a step touched (the sorted
            path; others stay dense), for the row-sparse optimizers (workloads.jobs.row_sparse); dense
            AdamW needs dense ones (default). An attribute: the train job sets it.

    Initialization (chosen so a freshly inserted layer is close to a no-op on the residual stream):
    keys/values ~ N(0, init_std²) — with unit-RMS queries the scores have std ≈ init_std·√dim, so the
    softmax starts near uniform over a token's rows. `up` keeps nn.Linear's default. In the replace form
    W_mix = [N(0, init_std² / d_up) | I]: the x block is the identity, and the lookup block is scaled by
    1/√d_up so that its contribution (a unit-RMS d_up-vector times it) has RMS ≈ init_std whatever d_up
    is (with a fixed std it would grow as √d_up: 1.3 at the paper's d_up = 4096). The output starts ≈ x,
    and the lookup path still gets a gradient from step one. In the residual form W_mix = 0, so the
    output starts exactly at x (the ReZero / zero-init-output-projection recipe); gradients still reach
    W_mix at step one and the rest after.
    """

    def __init__(
        self,
        dim: int,
        counts: Sequence[int] | np.ndarray | torch.Tensor,
        d_emb: int,
        d_up: int,
        *,
        tied: bool = False,
        residual: bool = False,
        impl: LookupImpl = "auto",
        init_std: float = 0.02,
        check_ids: bool = True,
        check_inputs: bool = True,
        sparse_grad: bool = False,
    ):
        super().__init__()
        for name, value in (("dim", dim), ("d_emb", d_emb), ("d_up", d_up)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if tied and d_emb != dim:
            raise ValueError(
                f"tied=True uses keys as values, so d_emb must equal dim; got d_emb={d_emb}, dim={dim}"
            )
        if impl not in IMPL_NAMES:
            raise ValueError(f"impl must be one of {list(IMPL_NAMES)}, got {impl!r}")
        self.dim, self.d_emb, self.d_up = dim, d_emb, d_up
        self.tied, self.residual, self.impl, self.init_std = tied, residual, impl, init_std
        self.check_ids, self.check_inputs, self.sparse_grad = check_ids, check_inputs, sparse_grad
        self.register_buffer("offsets", _offsets_from_counts(counts))
        self.vocab_size = self.offsets.shape[0] - 1
        self.n_rows = int(self.offsets[-1])
        self.keys = nn.Parameter(torch.empty(self.n_rows, dim))
        if not tied:
            self.values = nn.Parameter(torch.empty(self.n_rows, d_emb))
        self.up = nn.Linear(d_emb, d_up, bias=False)
        self.mix = nn.Linear(d_up + dim, dim, bias=False)
        self.norm_in = nn.RMSNorm(dim, eps=1e-6)
        self.norm_out = nn.RMSNorm(d_up, eps=1e-6)
        # Hook for placements that keep the tables elsewhere (workloads.l3.offload): called with the
        # (B, T) token ids, it returns this call's tables, having validated the ids itself.
        self.table_source: Callable[[torch.Tensor], LookupTables] | None = None
        self._decode_tables: tuple | None = None  # (key, tables or None): see `_fused_tables`
        self.serving = False  # see `serve`
        self._served: tuple | None = None  # (x dtype, the kernel's tables or None) while serving
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        nn.init.normal_(self.keys, std=self.init_std)
        if not self.tied:
            nn.init.normal_(self.values, std=self.init_std)
        self.up.reset_parameters()
        self.norm_in.reset_parameters()
        self.norm_out.reset_parameters()
        if self.residual:
            nn.init.zeros_(self.mix.weight)
        else:
            nn.init.normal_(self.mix.weight[:, : self.d_up], std=self.init_std / self.d_up**0.5)
            self.mix.weight[:, self.d_up :].copy_(torch.eye(self.dim))

    @property
    def value_table(self) -> torch.Tensor:
        return self.keys if self.tied else self.values

    def counts(self) -> torch.Tensor:
        """Rows per token d_t, (vocab,) int64."""
        return self.offsets[1:] - self.offsets[:-1]

    def lookup_tables(self, token_ids: torch.Tensor) -> LookupTables:
        """The ids and tables this call computes with: the layer's own, or those of `table_source`."""
        if self.table_source is not None:
            return self.table_source(token_ids)
        return LookupTables(token_ids.reshape(-1).long(), self.keys, self.value_table, self.offsets)

    def serve(self, on: bool = True) -> "L3Layer":
        """Serving mode, turned on once the weights are loaded (the infer job does): at most
        sublayer_cpu.MAX_POSITIONS positions on the CPU without grad or autocast run the fused kernel on
        tables built at the first such call and kept, with no per-call check of the weights' storages (at
        decode those checks cost close to a third of a tiny L3 sublayer's time, in the model). In-place
        updates show through the kept numpy views; `.to()` / `.double()` (`_apply`) and an offload, which
        drops them when it moves the tables (`drop_kept_tables`), build them again. A weight given a new
        storage by `.data =` is not followed: call `serve()` again after it. Returns the layer."""
        self.serving = on
        self.drop_kept_tables()
        return self

    def drop_kept_tables(self) -> None:
        """Forget the fused kernel's kept tables (they are built again at the next call that needs them)."""
        self._decode_tables = self._served = None

    def _apply(self, fn, recurse: bool = True):
        self.drop_kept_tables()  # .to(), .double(), .cuda(): new storages
        return super()._apply(fn, recurse)

    def forward(self, x: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
        if self.check_inputs:
            self._check_inputs(x, token_ids, check_range=self.check_ids and self.table_source is None)
        if self.serving and self.table_source is None and self.impl == "auto":
            served = self._served_tables(x)
            if served is not None:
                return sublayer_cpu.run(x, token_ids, served)
        B, T, D = x.shape
        # A table source hands out this call's tables (and validates the ids): called once per forward.
        t = self.lookup_tables(token_ids) if self.table_source is not None else None
        fused = self._fused_tables(x, t) if self.impl == "auto" else None
        if fused is not None:
            # Decode on CPU: the whole sublayer in one kernel call (no per-op dispatch; sublayer_cpu.py).
            return sublayer_cpu.run(x, token_ids if t is None else t.ids, fused)
        t = t if t is not None else self.lookup_tables(token_ids)
        q = self.norm_in(x).reshape(B * T, D)  # (B*T, dim) queries; RMSNorm_in touches the query only
        looked_up = l3_lookup(
            q, t.ids, t.keys, t.values, t.offsets, self.impl, self.sparse_grad
        )  # (B*T, d_emb)
        u = self.norm_out(self.up(looked_up)).view(B, T, self.d_up)  # (B, T, d_up)
        out = self.mix(torch.cat([u, x], dim=-1))  # (B, T, dim); the concatenated x is the raw input
        return x + out if self.residual else out

    def _served_tables(self, x: torch.Tensor) -> tuple | None:
        """While serving: the kept kernel tables when this call can use them (see `serve`), else None."""
        if torch.is_grad_enabled() or torch.is_autocast_enabled("cpu") or not x.is_cpu:
            return None
        if not 0 < x.shape[0] * x.shape[1] <= sublayer_cpu.MAX_POSITIONS:
            return None
        served = self._served
        if served is None or served[0] != x.dtype:
            served = self._served = (x.dtype, self._fused_tables(x, None))
        return served[1]

    def _kernel_tensors(self, t: LookupTables | None) -> tuple[torch.Tensor, ...]:
        """(keys, values, offsets, RMSNorm_in's weight, W_up, RMSNorm_out's weight, W_mix): `t`'s tables
        or the layer's own. Plain dict reads: nn.Module.__getattr__ is a Python call per attribute, a
        few µs each in a decode step."""
        params, mods = self._parameters, self._modules
        if t is None:
            keys = params["keys"]
            tables = (keys, keys if self.tied else params["values"], self._buffers["offsets"])
        else:
            tables = (t.keys, t.values, t.offsets)
        return (*tables, *[mods[name]._parameters["weight"] for name in ("norm_in", "up", "norm_out", "mix")])

    def _fused_tables(self, x: torch.Tensor, t: LookupTables | None) -> tuple | None:
        """The fused CPU kernel's tables (`sublayer_cpu.static_arrays`) when it can run this call, else None;
        t: a table source's tables (None: the layer's own). Without grad they are kept for the next call
        while the same storages, shapes, dtypes, device and autocast state hold (a decode step's checks and
        numpy views cost ~10% of a tiny L3 step otherwise); in-place updates show through the views, and
        the views keep the storages they were built on alive, so a new storage has a new address. With
        grad, everything is checked and built per call. Serving (`serve`) skips these checks."""
        if not 0 < x.shape[0] * x.shape[1] <= sublayer_cpu.MAX_POSITIONS:
            return None
        tensors = self._kernel_tensors(t)
        grad = torch.is_grad_enabled()
        # Storage, shape and dtype: a `table_source` may hand out slices of one buffer (prefetch.py's ring)
        key = (x.dtype, x.device, torch.is_autocast_enabled("cpu"))
        key += tuple((w.data_ptr(), w.shape, w.dtype) for w in tensors)
        kept = self._decode_tables
        if not grad and kept is not None and kept[0] == key:
            return kept[1]
        tables = None
        if sublayer_cpu.supported(x, *tensors[:2], *tensors[3:]):
            args = (self.norm_in, tensors[4], self.norm_out, tensors[6], self.residual)
            tables = sublayer_cpu.static_arrays(*tensors[:3], *args)
        if not grad and all(w.is_contiguous() for w in tensors):  # a copy would not follow updates
            self._decode_tables = (key, tables)
        return tables

    def _check_inputs(self, x: torch.Tensor, token_ids: torch.Tensor, check_range: bool = True) -> None:
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"x must have shape (B, T, {self.dim}), got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"x must be floating point, got dtype {x.dtype}")
        param_dtype = self.mix.weight.dtype
        if x.dtype != param_dtype and not torch.is_autocast_enabled(x.device.type):
            # Outside autocast a mismatch would fail deep inside a matmul with a RuntimeError.
            raise ValueError(f"x has dtype {x.dtype} but the layer's parameters are {param_dtype}")
        if token_ids.shape != x.shape[:2]:
            raise ValueError(
                f"token_ids must have shape {tuple(x.shape[:2])} (B, T of x), got {tuple(token_ids.shape)}"
            )
        if token_ids.dtype not in _ID_DTYPES:
            names = ", ".join(str(d).removeprefix("torch.") for d in _ID_DTYPES)
            raise ValueError(f"token_ids must be an integer tensor ({names}), got dtype {token_ids.dtype}")
        if token_ids.numel() == 0 or not check_range:
            return
        # One host read per call (off inside the Transformer, see check_ids): a silent out-of-range
        # gather would be worse.
        lo, hi = torch.stack(torch.aminmax(token_ids)).tolist()  # one device->host copy, not two
        if lo < 0 or hi >= self.vocab_size:
            bad = lo if lo < 0 else hi
            raise ValueError(f"token id {bad} is outside the L3 vocabulary [0, {self.vocab_size})")

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, vocab={self.vocab_size}, rows={self.n_rows}, d_emb={self.d_emb}, "
            f"d_up={self.d_up}, tied={self.tied}, residual={self.residual}, impl={self.impl!r}"
        )

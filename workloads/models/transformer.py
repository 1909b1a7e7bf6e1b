"""One Llama-style decoder for every family (no second model file): RMSNorm, RoPE grouped-query attention
(`attention`), SwiGLU MLP; `ModelConfig.block_specs()` says which blocks use DeepSpeed-MoE or hash-routed
experts and after which an L3 sublayer sits (L3_SPEC §1). Family "scone" (§6) replaces the input embedding
at f-gram positions by A_fgram's output. Single-device and eager: parallelism, compile and checkpointing
are applied to a built model elsewhere."""

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from workloads.kernels.mlp_decode import cpu as mlp_cpu
from workloads.l3.layer import L3Layer
from workloads.models.attention import INIT_STD, TORCH_DTYPES, Attention, KVCache, rope_angles
from workloads.models.config import BlockSpec, ModelConfig
from workloads.models.hash_moe import HashMoEMLP
from workloads.models.moe import MoEImpl, MoEMLP, serve_dropless
from workloads.models.moe_dropless import dropless_one_token


class FeedForward(nn.Module):
    """SwiGLU MLP: w2(silu(w1 x) * w3 x). Also the expert of the MoE block."""

    def __init__(self, dim: int, ffn_dim: int, out_std: float = INIT_STD):
        super().__init__()
        self.w1 = nn.Linear(dim, ffn_dim, bias=False)
        self.w3 = nn.Linear(dim, ffn_dim, bias=False)
        self.w2 = nn.Linear(ffn_dim, dim, bias=False)
        self.out_std = out_std
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        nn.init.normal_(self.w1.weight, std=INIT_STD)
        nn.init.normal_(self.w3.weight, std=INIT_STD)
        nn.init.normal_(self.w2.weight, std=self.out_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    """Pre-norm decoder block (attention, then dense MLP or MoE), optionally followed by an L3 sublayer."""

    def __init__(self, config: ModelConfig, spec: BlockSpec, l3_counts: np.ndarray | None):
        super().__init__()
        self.index = spec.index
        # GPT-2 style: residual-branch outputs start smaller so the stream's variance stays O(1) with depth.
        out_std = INIT_STD / math.sqrt(2 * config.n_layers)
        self.attn_norm = nn.RMSNorm(config.dim, eps=config.norm_eps)
        self.attn = Attention(config, spec.index, out_std)
        self.mlp_norm = nn.RMSNorm(config.dim, eps=config.norm_eps)
        if spec.mlp == "moe":
            expert = FeedForward(config.dim, config.moe.ffn_dim, out_std)
            if config.family == "hash_moe":  # experts routed by token id: no router, no aux loss
                self.mlp: nn.Module = HashMoEMLP(config.dim, config.moe, expert, config.vocab_size)
            else:
                self.mlp = MoEMLP(config.dim, config.moe, expert)
        else:
            self.mlp = FeedForward(config.dim, config.ffn_dim, out_std)
        self.l3: L3Layer | None = None
        if spec.l3_after:
            l3 = config.l3
            self.l3 = L3Layer(
                config.dim,
                l3_counts,
                l3.d_emb,
                l3.d_up,
                tied=l3.tied,
                residual=l3.residual,
                impl=l3.impl,
                check_ids=False,  # tok_emb rejects out-of-range ids first; jobs validate them on entry
                check_inputs=False,  # the block hands it its own (B, T, dim) stream and (B, T) ids
            )
        self.serving = False
        self._decode: tuple | None = None  # the fused decode kernel's tables while serving (`serve`)

    def serve(self, on: bool = True) -> "Block":
        """Serving mode, turned on once the weights are loaded (`Transformer.serve`): a call of a few float32
        positions (`mlp_cpu.max_positions`) without grad runs the MLP sublayer (RMSNorm, the dense MLP
        or a dropless MoE's router and experts, the residual add) as one fused CPU kernel
        (`workloads.kernels.mlp_decode.cpu`): what a CPU serving stack runs at decode, where torch's
        per-op dispatch and batch-1 GEMMs cost more than the weights' bytes. Tables are numpy views of
        the weights (a MoE's experts stacked first: `MoEMLP.stacked_experts`), so in-place updates show
        through; `.to()` / `.double()` build them again. A MoE recording its balance, a DeepSpeed-served
        MoE, hash-MoE, and weights off the CPU or not float32 keep the torch path. Returns the block."""
        self.serving, self._decode = on, None
        norm, mlp = self.mlp_norm, self.mlp
        if not on or not mlp_cpu.available(norm.weight):
            return self
        if isinstance(mlp, FeedForward) and mlp_cpu.available(mlp.w1.weight, mlp.w3.weight, mlp.w2.weight):
            self._decode = mlp_cpu.dense_tables(norm, mlp.w1.weight, mlp.w3.weight, mlp.w2.weight)
        elif (
            isinstance(mlp, MoEMLP)
            and mlp.impl == "dropless"
            and mlp_cpu.available(mlp.gate.weight, *(p for e in mlp.experts for p in e.parameters()))
        ):
            self._decode = mlp_cpu.moe_tables(norm, mlp.gate.weight, *mlp.stacked_experts(), mlp.config.top_k)
        return self

    def _apply(self, fn, recurse: bool = True):
        out = super()._apply(fn, recurse)  # new storages: the kernel's views are stale
        if self.serving:
            self.serve()
        return out

    def forward(self, h, token_ids, cos, sin, cache: KVCache | None, start_pos: int):
        """(B, T, D) -> ((B, T, D), l_aux or None, exp_counts or None)."""
        h = h + self.attn(self.attn_norm(h), cos, sin, cache, start_pos)
        l_aux = exp_counts = None
        decode = self._decode
        if (
            decode is not None
            and mlp_cpu.runs(h, decode)
            and (decode[0] == "dense" or self.mlp.one_token is not None)  # a MoE not recording balance
        ):
            h = mlp_cpu.run(h, decode)
        elif isinstance(self.mlp, MoEMLP):  # adds the residual itself (serving folds a gate weight into it)
            x, served = self.mlp_norm(h), self.mlp.one_token
            if served is not None and x.shape[0] * x.shape[1] == 1:
                # Decode at batch 1, served: straight to the host router. The module call's Python layers
                # (nn.Module.__call__, MoEMLP.forward's branches) measured ~1.5% of a tiny decode step.
                h = dropless_one_token(x, *served, h)
            else:
                h, l_aux, exp_counts = self.mlp(x, residual=h)
        elif isinstance(self.mlp, HashMoEMLP):
            out, l_aux, exp_counts = self.mlp(self.mlp_norm(h), token_ids)
            h = h + out
        else:
            h = h + self.mlp(self.mlp_norm(h))  # (B, T, D)
        if self.l3 is not None:
            # The L3 sublayer routes by input token id (static routing), so the ids travel with h.
            # It adds its own residual when l3.residual; otherwise its output replaces h (L3_SPEC §1).
            h = self.l3(h, token_ids)
        return h, l_aux, exp_counts


def _check_counts(config: ModelConfig, pos: int, counts) -> np.ndarray:
    counts = np.asarray(counts.cpu() if isinstance(counts, torch.Tensor) else counts)
    if counts.shape != (config.vocab_size,) or int(counts.sum()) != config.l3.budget:
        raise ValueError(
            f"l3_counts[{pos}] must have shape ({config.vocab_size},) and sum to "
            f"l3.budget={config.l3.budget}, got shape {counts.shape} summing to {int(counts.sum())}"
        )
    if int(counts.max()) > config.l3.cap:
        raise ValueError(
            f"l3_counts[{pos}] has a token with {int(counts.max())} rows > l3.cap={config.l3.cap}"
        )
    return counts


def resolve_l3_counts(
    config: ModelConfig, l3_counts: Mapping[int, Sequence[int] | np.ndarray | torch.Tensor] | None
) -> dict[int, np.ndarray]:
    """Rows per token for each L3 position: the given arrays, else `uniform_allocate` (see Transformer)."""
    if config.l3 is None:
        if l3_counts:
            raise ValueError(
                f"l3_counts given for positions {sorted(l3_counts)} but model.family={config.family!r}"
            )
        return {}
    l3_counts = dict(l3_counts or {})
    unknown = sorted(set(l3_counts) - set(config.l3.positions))
    if unknown:
        raise ValueError(
            f"l3_counts has positions {unknown} that are not in l3.positions={config.l3.positions}"
        )
    resolved = {pos: _check_counts(config, pos, counts) for pos, counts in l3_counts.items()}
    missing = [p for p in config.l3.positions if p not in resolved]
    if missing and config.l3.allocation != "uniform":
        warnings.warn(
            f"l3.allocation={config.l3.allocation!r} but no counts were given for L3 positions {missing}; "
            "using a uniform allocation (it needs the corpus: pass l3_counts from "
            "workloads.l3.allocation.lzw_allocate)",
            stacklevel=3,
        )
    if missing:  # imported only when needed: the allocation module pulls in numba (JIT trie)
        from workloads.l3.allocation import uniform_allocate

        for pos in missing:
            resolved[pos] = uniform_allocate(config.vocab_size, config.l3.budget, config.l3.cap)
    return resolved


class FgramEncoder(nn.Module):
    """A_fgram (L3_SPEC §6): the main model's blocks without a token embedding, `scone.layers(n_layers)` deep
    with `scone.ffn_dim(ffn_dim)`-wide MLPs, plus learned absolute positions 0..K-1 (the blocks keep
    their RoPE). It reads the token embeddings of an f-gram (left-aligned, right-padded) and returns the
    residual stream at the f-gram's last position: causal attention keeps that output independent of the
    padding. No final norm: the output stands in for a token embedding, so it keeps the residual
    stream's scale.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        sc = config.scone
        inner = replace(
            config,
            family="dense",
            scone=None,
            n_layers=sc.layers(config.n_layers),
            ffn_dim=sc.ffn_dim(config.ffn_dim),
        )
        self.config, self.max_n = inner, sc.max_n
        self.pos_emb = nn.Embedding(sc.max_n, config.dim)
        nn.init.normal_(self.pos_emb.weight, std=INIT_STD)
        self.layers = nn.ModuleList(
            Block(inner, BlockSpec(index=i, mlp="dense", l3_after=False), None) for i in range(inner.n_layers)
        )

    def forward(self, emb: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """emb (U, L, D) token embeddings of U f-grams, lengths (U,) in [1, L] -> (U, D)."""
        U, L, _ = emb.shape
        h = emb + self.pos_emb.weight[:L]  # (U, L, D)
        positions = torch.arange(L, device=emb.device)
        cos, sin = rope_angles(positions, self.config.head_dim, self.config.rope_theta)
        for block in self.layers:
            h, _, _ = block(h, None, cos, sin, None, 0)
        return h[torch.arange(U, device=emb.device), lengths - 1]  # (U, D)


# A served f-gram table (workloads.scone.serve): (token_ids, fgram_ids or None) -> (mask (B, T) bool,
# rows (mask.sum(), D)), the embeddings of the positions that have an f-gram.
FgramSource = Callable[[torch.Tensor, "torch.Tensor | None"], tuple[torch.Tensor, torch.Tensor]]


def _fgram_buffers(config: ModelConfig, fgrams) -> tuple[torch.Tensor, torch.Tensor]:
    """(S, K) int64 f-gram tokens (-1 padded) and (S,) lengths from an object with .tokens/.lengths."""
    if fgrams is None:
        raise ValueError(
            "model.family='scone' needs its f-grams: Transformer(config, fgrams=...) with the result of "
            "workloads.scone.discovery.discover_fgrams (or load_fgrams)"
        )
    tokens = torch.as_tensor(np.asarray(fgrams.tokens), dtype=torch.int64)
    lengths = torch.as_tensor(np.asarray(fgrams.lengths), dtype=torch.int64)
    sc = config.scone
    if tokens.shape != (sc.n_fgrams, sc.max_n) or lengths.shape != (sc.n_fgrams,):
        raise ValueError(
            f"fgrams must hold scone.n_fgrams={sc.n_fgrams} rows of scone.max_n={sc.max_n} tokens, got "
            f"tokens {tuple(tokens.shape)}, lengths {tuple(lengths.shape)}"
        )
    if tokens.numel() and int(tokens.max()) >= config.vocab_size:
        raise ValueError(f"fgrams hold token id {int(tokens.max())} >= model.vocab_size={config.vocab_size}")
    return tokens, lengths


class Transformer(nn.Module):
    """The decoder. `Transformer(config, l3_counts={block_index: rows_per_token})`.

    l3_counts: for each L3 position, the (vocab_size,) rows per token summing to `l3.budget` (e.g. from
    `lzw_allocate` on the training corpus). Positions without counts get `uniform_allocate(vocab_size,
    budget, cap)`, with a warning unless `l3.allocation` is "uniform" (a uniform allocation is the ablation).
    fgrams (family "scone" only): the kept f-grams (`workloads.scone.discovery.Fgrams`), stored as the
    buffers fgram_tokens (S, K) and fgram_lengths (S,); `fgram_source` serves precomputed rows instead.
    """

    def __init__(
        self,
        config: ModelConfig,
        l3_counts: Mapping[int, Sequence[int] | np.ndarray] | None = None,
        fgrams=None,
    ):
        super().__init__()
        self.config = config
        counts = resolve_l3_counts(config, l3_counts)
        self.fgram: FgramEncoder | None = None
        self.fgram_source: FgramSource | None = None
        if config.scone is not None:
            tokens, lengths = _fgram_buffers(config, fgrams)
            self.register_buffer("fgram_tokens", tokens)
            self.register_buffer("fgram_lengths", lengths)
            self.fgram = FgramEncoder(config)
        elif fgrams is not None:
            raise ValueError(f"fgrams given but model.family={config.family!r} (only 'scone' uses them)")
        self.tok_emb = nn.Embedding(config.vocab_size, config.dim)
        self.layers = nn.ModuleList(
            Block(config, spec, counts.get(spec.index)) for spec in config.block_specs()
        )
        self.norm = nn.RMSNorm(config.dim, eps=config.norm_eps)
        self.lm_head = nn.Linear(config.dim, config.vocab_size, bias=False)
        nn.init.normal_(self.tok_emb.weight, std=INIT_STD)
        if config.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight
        else:
            nn.init.normal_(self.lm_head.weight, std=INIT_STD)
        self.to(TORCH_DTYPES[config.dtype])

    def serve(self, moe_impl: MoEImpl = "dropless") -> "Transformer":
        """Serving mode, once the weights are loaded (the infer job does it): MoE blocks on `moe_impl`
        (`serve_dropless`), each block's fused decode MLP (`Block.serve`) and each L3 sublayer's kept
        kernel tables (`L3Layer.serve`). Returns the model."""
        serve_dropless(self, moe_impl)
        for block in self.layers:
            block.serve()
            if block.l3 is not None:
                block.l3.serve()
        return self

    def new_cache(self, batch_size: int, max_seq_len: int | None = None) -> KVCache:
        """An empty KV cache on this model's device and dtype."""
        return KVCache(
            self.config,
            batch_size,
            max_seq_len,
            device=self.tok_emb.weight.device,
            dtype=self.tok_emb.weight.dtype,
        )

    def forward(
        self,
        token_ids: torch.Tensor,
        cache: KVCache | None = None,
        start_pos: int = 0,
        *,
        fgram_ids: torch.Tensor | None = None,
        return_expert_counts: bool = False,
    ):
        """token_ids (B, T) -> (logits (B, T, vocab), aux_loss).

        fgram_ids (scone): (B, T) int64, the row of the longest f-gram ending at each position or -1
        (`SuffixMatcher.tag`); its embedding comes from A_fgram, unless `fgram_source` serves it.

        aux_loss = moe.aux_loss_coef * Σ_layers l_aux, a float32 scalar ready to add to the LM loss
        (0 for dense and L3: L3 routing is static). With `cache`, the T tokens sit at positions
        [start_pos, start_pos + T) and attend to the cached ones. `return_expert_counts=True` adds a third
        item, {block index: (num_experts,) int64 pre-capacity token counts} for load-balance metrics.
        """
        B, T = token_ids.shape
        limit = cache.max_seq_len if cache is not None else self.config.max_seq_len
        if start_pos < 0 or start_pos + T > limit:
            raise ValueError(f"positions [{start_pos}, {start_pos + T}) do not fit in max_seq_len={limit}")
        h = self.embed(token_ids, fgram_ids)  # (B, T, D)
        positions = torch.arange(start_pos, start_pos + T, device=token_ids.device)
        cos, sin = rope_angles(positions, self.config.head_dim, self.config.rope_theta)  # (T, hd / 2) each
        aux_loss = torch.zeros((), device=token_ids.device, dtype=torch.float32)
        expert_counts: dict[int, torch.Tensor] = {}
        has_aux = False
        for block in self.layers:
            h, l_aux, exp_counts = block(h, token_ids, cos, sin, cache, start_pos)
            if l_aux is not None:  # None: a dense block, or dropless MoE serving (no aux loss)
                aux_loss, has_aux = aux_loss + l_aux, True
            if exp_counts is not None:
                expert_counts[block.index] = exp_counts
        logits = self.lm_head(self.norm(h))  # (B, T, vocab)
        if has_aux:  # a zero needs no scaling (an op fewer per decode step)
            aux_loss = aux_loss * self.config.moe.aux_loss_coef
        if return_expert_counts:
            return logits, aux_loss, expert_counts
        return logits, aux_loss

    def embed(self, token_ids: torch.Tensor, fgram_ids: torch.Tensor | None = None) -> torch.Tensor:
        """The input embeddings (B, T, D): token embeddings, REPLACED at f-gram positions (scone)."""
        h = self.tok_emb(token_ids)  # (B, T, D)
        if self.fgram is None:
            if fgram_ids is not None:
                raise ValueError(f"fgram_ids given but model.family={self.config.family!r}")
            return h
        if self.fgram_source is not None:
            mask, rows = self.fgram_source(token_ids, fgram_ids)  # (B, T), (M, D)
        elif fgram_ids is None:
            raise ValueError(
                "model.family='scone' needs fgram_ids (B, T) (workloads.scone.tagging.SuffixMatcher.tag) "
                "or a served table in model.fgram_source"
            )
        else:
            if fgram_ids.shape != token_ids.shape:
                raise ValueError(f"fgram_ids {tuple(fgram_ids.shape)} != token_ids {tuple(token_ids.shape)}")
            mask = fgram_ids >= 0
            rows = self.fgram_embeddings(fgram_ids[mask])
        return h.index_put((mask,), rows.to(h.dtype))  # replace, not add (the paper's choice)

    def fgram_embeddings(self, ids: torch.Tensor) -> torch.Tensor:
        """(M,) f-gram rows -> (M, D) through A_fgram; each distinct f-gram of the call is encoded once,
        all of them padded to the call's longest."""
        if ids.numel() == 0:
            return self.tok_emb.weight.new_zeros(0, self.config.dim)
        uniq, inverse = torch.unique(ids, return_inverse=True)  # (U,), (M,)
        lengths = self.fgram_lengths[uniq]  # (U,)
        longest = int(lengths.max())
        tokens = self.fgram_tokens[uniq, :longest].clamp_min(0)  # (U, L); padding reads token 0
        return self.fgram(self.tok_emb(tokens), lengths)[inverse]  # (M, D)

    @torch.no_grad()
    def precompute_fgram_table(self, batch_size: int = 4096) -> torch.Tensor:
        """F (L3_SPEC §6): A_fgram's output for every f-gram, (S, D) on the model's device, in eval mode."""
        if self.fgram is None:
            raise ValueError(f"model.family={self.config.family!r} has no f-grams")
        was_training = self.training
        self.eval()
        S = self.fgram_tokens.shape[0]
        out = [
            self.fgram_embeddings(torch.arange(lo, min(S, lo + batch_size), device=self.fgram_tokens.device))
            for lo in range(0, S, batch_size)
        ]
        self.train(was_training)
        return torch.cat(out) if out else self.tok_emb.weight.new_zeros(0, self.config.dim)

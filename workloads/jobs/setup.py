"""Resolve and build, shared by the train and infer jobs: preset → ModelConfig → data → L3 counts → model
(`prepare_job`: the chain, once). Every bad input raises ValueError naming the field, before the expensive
part where possible. The API: docs/workloads.md#workloadsjobssetup."""

import os
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from workloads.data import DataConfig, PreparedData, load_tokenizer, prepare, resolve_cache_dir
from workloads.data.config import min_vocab_size, stable_hash
from workloads.jobs.spec import SCONE_FIELDS, ModelSpec
from workloads.l3.allocation import load_allocation, lzw_allocate, save_allocation, uniform_allocate
from workloads.l3.lzw_paper import lzw_paper_allocate, paper_lines
from workloads.models import presets
from workloads.models.accounting import ParamCount, count_params
from workloads.models.config import ModelConfig
from workloads.models.isosparse import default_moe, match
from workloads.models.transformer import Transformer

L3Counts = dict[int, np.ndarray]


@dataclass(frozen=True, eq=False)
class Corpus:
    """What L3 accounting needs from the data a job uses (L3_SPEC §5): the train split's token counts over
    the model vocabulary and `allocate(budget) -> (vocab,) rows per token` (same corpus, tokenizer, cap and
    allocation as the job's L3 layers)."""

    token_freqs: np.ndarray
    allocate: Callable[[int], np.ndarray]


def _templates(spec: ModelSpec):
    """(dense base, L3 template) of the preset after the overrides."""
    o = spec.overrides
    preset = presets.PRESETS[spec.preset]
    base, l3 = preset.dense, preset.l3
    if o.vocab_size is not None:
        rows_per_token = l3.budget / base.vocab_size
        base = replace(base, vocab_size=o.vocab_size)
        l3 = replace(l3, budget=round(rows_per_token * o.vocab_size))
    l3 = replace(
        l3,
        cap=o.l3_cap if o.l3_cap is not None else l3.cap,
        allocation=o.l3_allocation or l3.allocation,
        tied=o.l3_tied if o.l3_tied is not None else l3.tied,
        residual=o.l3_residual if o.l3_residual is not None else l3.residual,
        impl=o.l3_impl or l3.impl,
        positions=o.l3_positions or l3.positions,
    )
    if l3.positions[-1] >= base.n_layers:
        raise FieldError(
            "overrides.l3_positions",
            f"{list(l3.positions)} must lie in [0, {base.n_layers}): preset {spec.preset!r} has "
            f"{base.n_layers} blocks (position i is the L3 layer after block i)",
        )
    if l3.tied:
        l3 = replace(l3, d_emb=base.dim)
    return base, replace(l3, budget=min(l3.budget, base.vocab_size * l3.cap))


def base_model_config(spec: ModelSpec) -> ModelConfig:
    """The dense base of `spec` after the overrides: its vocabulary and max_seq_len are those of every
    family of the group, so data can be prepared before the L3 / MoE model is matched."""
    return _templates(spec)[0]


def resolve_model_config(spec: ModelSpec, corpus: Corpus | None = None) -> ModelConfig:
    """The preset as `spec.family` after the overrides: the dense base, the L3 model matched iso-active
    with it, or the MoE matched iso-active with the base and iso-total with that L3 model (the group's L3
    model: the spec's l3_* overrides and allocation_path describe it for the moe family too).

    corpus: the data the job uses (`corpus_for`); the L3 rows per token are weighted by it, as in the job's
    reported `params_active`. Without it the L3 model is matched on the budget / vocab estimate."""
    o = spec.overrides
    base, l3 = _templates(spec)
    if spec.family == "dense":
        return base
    if spec.family == "scone":  # the backbone with f-gram embeddings, inference-resident iso with it
        scone = presets.PRESETS[spec.preset].scone
        given = {n: getattr(o, n) for n in SCONE_FIELDS if getattr(o, n) is not None}
        scone = replace(scone, **{n.removeprefix("scone_"): v for n, v in given.items()})
        if o.scone_fgram_layers is None and o.scone_depth_multiplier is not None:
            scone = replace(scone, fgram_layers=None)  # the multiplier decides A_fgram's depth
        return match(base, family="scone", scone=scone)
    freqs, allocate = (None, None) if corpus is None else (corpus.token_freqs, corpus.allocate)
    l3_cfg = match(base, family="l3", l3=l3, token_freqs=freqs, allocate=allocate)
    if spec.family == "l3":
        return l3_cfg
    moe = default_moe(base)
    given = {name: getattr(o, f"moe_{name}") for name in _MOE_TEMPLATE_FIELDS}
    moe = replace(moe, **{name: value for name, value in given.items() if value is not None})
    top_ks = (o.moe_top_k,) if o.moe_top_k is not None else (1, 2, 4, 8)
    total = count_params(l3_cfg).total
    return match(
        base, family=spec.family, total_params=total, moe=moe, top_ks=top_ks, num_experts=o.moe_num_experts
    )


# MoEConfig fields an override sets on the template as they are (the matcher sets num_experts and top_k).
_MOE_TEMPLATE_FIELDS = (
    "ep_size", "use_rts", "top2_sampling", "capacity_factor", "eval_capacity_factor", "min_capacity",
    "drop_tokens", "aux_loss_coef",
)  # fmt: skip


def corpus_for(
    spec: ModelSpec, data: PreparedData, cache_dir: str | os.PathLike | None = None
) -> Corpus | None:
    """The `Corpus` of `data` for the L3 model of spec's group (None for dense, scone: nothing to weight)."""
    if spec.family in ("dense", "scone"):
        return None
    base, l3 = _templates(spec)
    vocab = base.vocab_size

    def allocate(budget: int) -> np.ndarray:
        if spec.allocation_path is not None:
            return _allocation_from_file(spec.allocation_path, vocab, budget, l3.cap, data)
        if l3.allocation == "uniform":
            return uniform_allocate(vocab, budget, l3.cap)
        return _lzw_cached(vocab, budget, l3.cap, l3.allocation, data, cache_dir)

    return Corpus(token_freqs=token_freqs_for(base, data), allocate=allocate)


class FieldError(ValueError):
    """A bad value found when a job's config is resolved: `field` is its dotted path in the job config
    ("data.seq_len"), so that the orchestrator reports it where the user wrote it."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


def check_data_fits(
    data_cfg: DataConfig, model_cfg: ModelConfig, seq_len_field: str = "data.seq_len"
) -> None:
    """Cheap checks before any data work: window length, the byte-level BPE minimum (the tokenizer is
    trained to the model's vocab) and, for a given tokenizer, its vocabulary. Raises FieldError."""
    if data_cfg.seq_len > model_cfg.max_seq_len:
        raise FieldError(
            seq_len_field, f"{data_cfg.seq_len} exceeds the model's max_seq_len={model_cfg.max_seq_len}"
        )
    if data_cfg.tokenizer_path is None:
        least = min_vocab_size(data_cfg.special_tokens)
        if model_cfg.vocab_size < least:
            raise FieldError(
                "overrides.vocab_size",
                f"the model's vocab_size={model_cfg.vocab_size} is below the byte-level BPE minimum "
                f"{least} (256 bytes + {least - 256} special token(s))",
            )
        return
    try:
        vocab = load_tokenizer(data_cfg.tokenizer_path).get_vocab_size()
    except (ValueError, OSError) as err:  # reported at the field the user wrote, not the model's section
        raise FieldError("data.tokenizer_path", str(err)) from None
    if vocab > model_cfg.vocab_size:
        raise FieldError(
            "data.tokenizer_path",
            f"{data_cfg.tokenizer_path!r} has vocab_size={vocab} > the model's {model_cfg.vocab_size}",
        )


def device_and_dtype(device: str, dtype: str, cuda: bool | None = None) -> tuple[str, str]:
    """A job's "auto" device and dtype resolved: "cuda" when `cuda` (None: torch sees a GPU) else "cpu";
    bfloat16 on CUDA, float32 on CPU."""
    cuda = torch.cuda.is_available() if cuda is None else cuda
    device = device if device != "auto" else ("cuda" if cuda else "cpu")
    return device, dtype if dtype != "auto" else ("bfloat16" if device.startswith("cuda") else "float32")


def prepare_data(
    data_cfg: DataConfig, model_cfg: ModelConfig, cache_dir: str | os.PathLike | None = None
) -> PreparedData:
    """`workloads.data.prepare` with the BPE trained to the model's vocab size (cached)."""
    check_data_fits(data_cfg, model_cfg)
    if data_cfg.tokenizer_path is None:
        data_cfg = replace(data_cfg, vocab_size=model_cfg.vocab_size)
    data = prepare(data_cfg, cache_dir)
    if data.vocab_size > model_cfg.vocab_size:
        raise ValueError(f"tokenizer vocab_size={data.vocab_size} > model vocab_size={model_cfg.vocab_size}")
    return data


def token_freqs_for(model_cfg: ModelConfig, data: PreparedData) -> np.ndarray:
    """Train-split token counts as (model vocab,) float64; ids the tokenizer lacks count 0."""
    freqs = np.zeros(model_cfg.vocab_size, dtype=np.float64)
    freqs[: data.token_freqs.shape[0]] = data.token_freqs
    return freqs


def corpus_params(model_cfg: ModelConfig, data: PreparedData, counts: L3Counts | None) -> ParamCount:
    """`count_params` with the L3 rows per token weighted by `data`'s train split: what every job (and the
    suite's plan, `workloads.group`) reports as params_active."""
    return count_params(model_cfg, token_freqs_for(model_cfg, data), counts or None)


def _allocation_from_file(path: str, vocab: int, budget: int, cap: int, data: PreparedData) -> np.ndarray:
    alloc = load_allocation(path)
    # The counts index the model's vocabulary, which the tokenizer was trained to; on a small corpus the
    # BPE may stop below it (data.vocab_size < model vocab_size), and the unused ids still own rows.
    if alloc.vocab_size != vocab or data.vocab_size > alloc.vocab_size:
        raise ValueError(
            f"allocation_path {path!r} has vocab_size={alloc.vocab_size}, but the tokenizer has "
            f"{data.vocab_size} and the model {vocab} (the file must cover the model's "
            "vocabulary, to which the tokenizer was trained)"
        )
    if alloc.budget != budget or int(alloc.counts.max()) > cap:
        raise ValueError(
            f"allocation_path {path!r} has budget={alloc.budget}, max rows {int(alloc.counts.max())}; the "
            f"model needs l3.budget={budget} and at most l3.cap={cap} rows per token"
        )
    return alloc.counts


def _lzw_cached(vocab: int, budget: int, cap: int, method: str, data: PreparedData, cache_dir) -> np.ndarray:
    key = stable_hash(alloc=f"{method}-v1", data=data.fingerprint, vocab=vocab, budget=budget, cap=cap)
    path = resolve_cache_dir(cache_dir) / "l3" / f"alloc-{key[:24]}.npz"
    if path.is_file():
        return load_allocation(path).counts
    if method == "lzw-paper":
        counts = lzw_paper_allocate(paper_lines(data.allocation_texts(), data.tokenizer), vocab, budget, cap)
    else:
        counts = lzw_allocate(data.allocation_sequences(), vocab, budget, cap)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_allocation(
        path,
        counts,
        vocab_size=vocab,
        budget=budget,
        cap=cap,
        corpus_fingerprint=data.fingerprint,
        n_tokens=data.train.n_tokens,
        method=method,
    )
    return counts


def build_model(
    model_cfg: ModelConfig,
    counts: L3Counts | None,
    device: torch.device | str,
    seed: int | None = None,
    fgrams=None,
) -> Transformer:
    """The Transformer on `device` (parameters in model_cfg.dtype), initialised from `seed` when given.
    fgrams: the f-grams of a scone model (`resolve_scone(...).fgrams`)."""
    if seed is not None:
        torch.manual_seed(seed)
    return Transformer(model_cfg, l3_counts=counts or None, fgrams=fgrams).to(device)


def resolve_scone(model_cfg: ModelConfig, data: PreparedData, cache_dir=None):
    """For a scone model: its f-grams discovered on the train split and both splits tagged (cached; see
    `workloads.scone.data`); None for the other families."""
    if model_cfg.scone is None:
        return None
    from workloads.scone.data import prepare_scone

    return prepare_scone(data, model_cfg.scone, model_cfg.vocab_size, cache_dir)


@dataclass(frozen=True)
class Prepared:
    """A job's inputs, prepared once: its data, the model it runs, the L3 rows per token and SCONE's data."""

    data: PreparedData
    model: ModelConfig
    counts: L3Counts
    scone: object  # resolve_scone's SconeData, None for the other families


def prepare_job(
    spec: ModelSpec,
    model: ModelConfig | None,
    data_cfg: DataConfig,
    cache_dir=None,
    specialize: Callable[[ModelConfig], ModelConfig] = lambda m: m,
) -> Prepared:
    """data → corpus → matched model → L3 counts → f-grams: the one chain the train, infer and eval jobs
    run. `model`: the resolved config the orchestrator shipped (run as is); None resolves it here, on this
    data, then `specialize`s it (the infer job's dtype and MoE capacity)."""
    data = prepare_data(data_cfg, model or base_model_config(spec), cache_dir)
    corpus = corpus_for(spec, data, cache_dir)
    model = model or specialize(resolve_model_config(spec, corpus))
    # the same rows per token serve every L3 layer (LZW cached, uniform, or spec.allocation_path)
    counts = dict.fromkeys(model.l3.positions, corpus.allocate(model.l3.budget)) if model.l3 else {}
    return Prepared(data, model, counts, resolve_scone(model, data, cache_dir))


def allocation_summary(spec: ModelSpec, model_cfg: ModelConfig, counts: L3Counts, data: PreparedData) -> dict:
    """What an L3 job's allocation was (logged as allocation_summary.json): its source, size and shape of
    the rows-per-token distribution, raw and weighted by the training tokens (the per-token mean is what
    L3_SPEC §5 counts as active)."""
    l3 = model_cfg.l3
    rows = np.asarray(counts[min(counts)], dtype=np.float64)
    freqs = token_freqs_for(model_cfg, data).astype(np.float64)
    source = f"file:{spec.allocation_path}" if spec.allocation_path is not None else l3.allocation
    return {
        "source": source,
        "vocab_size": int(rows.size),
        "budget": int(rows.sum()),
        "cap": l3.cap,
        "positions": list(l3.positions),
        "rows_min": int(rows.min()),
        "rows_median": float(np.median(rows)),
        "rows_max": int(rows.max()),
        "tokens_at_cap": int((rows == l3.cap).sum()),
        "rows_per_token_weighted": float(rows @ freqs / freqs.sum()) if freqs.sum() > 0 else None,
        "data_fingerprint": data.fingerprint,
    }

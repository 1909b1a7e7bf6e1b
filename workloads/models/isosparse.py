"""Iso-sparse matching (L3_SPEC §5): from a dense base, build L3 / MoE configs of the same depth whose
active parameters equal the base's and whose total parameters hit a target, each within 2%.
Details: docs/workloads.md#workloadsmodelsisosparse."""

from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from workloads.models.accounting import count_params
from workloads.models.config import (
    EXPERT_FAMILIES,
    L3Config,
    ModelConfig,
    MoEConfig,
    SconeConfig,
    middle_positions,
)

TOLERANCE = 0.02
GOOD_ENOUGH = 0.01  # MoE search: below this error the simplest routing wins
PAPER_D_UP = 4096


def default_l3(base: ModelConfig, budget: int | None = None) -> L3Config:
    """The paper's recipe (L3_SPEC §1): 2 L3 layers at middle depth, cap 512, d_emb = dim/2,
    d_up = 4096 (capped at 4·dim for small models), untied, replace form, LZW allocation.
    budget defaults to 4 rows per token (the paper's 710K rows over a 180K vocabulary is 3.9)."""
    count = min(2, base.n_layers)
    return L3Config(
        positions=middle_positions(base.n_layers, count),
        budget=budget if budget is not None else 4 * base.vocab_size,
        d_emb=max(1, base.dim // 2),
        d_up=min(PAPER_D_UP, 4 * base.dim),
    )


def default_moe(
    base: ModelConfig, *, num_experts: int = 8, ffn_dim: int | None = None, top_k: int = 1
) -> MoEConfig:
    """MoE in every block, DeepSpeed's default gate settings; the matcher overwrites the sizes."""
    return MoEConfig(
        positions=tuple(range(base.n_layers)),
        num_experts=num_experts,
        ffn_dim=ffn_dim or base.ffn_dim,
        top_k=top_k,
    )


def default_scone(base: ModelConfig, n_fgrams: int | None = None) -> SconeConfig:
    """The paper's recipe: K = 5, min count 5, A_fgram as deep as the main model (1×); n_fgrams defaults to
    2 f-grams per vocabulary entry (the paper: 10M-1B f-grams for a 50K vocabulary)."""
    return SconeConfig(n_fgrams=n_fgrams or 2 * base.vocab_size)


def _match_scone(base: ModelConfig, want_active: int, template: SconeConfig) -> ModelConfig:
    cfg = replace(base, family="scone", scone=template)
    active = count_params(cfg).active
    if abs(_rel(active, want_active)) > TOLERANCE:  # only when the embedding conventions differ
        m = _multiple_of(3 * base.dim * base.n_layers, want_active)
        a1, a2 = (count_params(replace(cfg, ffn_dim=f)).active for f in (m, 2 * m))
        ffn = m + (want_active - a1) * m / (a2 - a1)
        cfg = replace(cfg, ffn_dim=max(m, m * round(ffn / m)))
    pc = count_params(cfg)
    return _check("scone", cfg, pc.active, pc.total, want_active, None)


def _multiple_of(units_per_step: int, target: int) -> int:
    """Coarsest hardware-friendly multiple (256 .. 1) whose one step moves the count by <= 0.25%."""
    for m in (256, 128, 64, 32, 16, 8, 4, 2):
        if m * units_per_step <= 0.0025 * target:
            return m
    return 1


def _rel(value: int, target: float) -> float:
    return (value - target) / target


def _target_total(base_active: int, total_params: int | None, sparsity: float | None) -> int | None:
    if total_params is not None and sparsity is not None:
        raise ValueError("give total_params or sparsity, not both")
    if sparsity is not None:
        if sparsity < 1:
            raise ValueError(f"sparsity = total / active must be >= 1, got {sparsity}")
        return round(sparsity * base_active)
    if total_params is not None and total_params <= 0:
        raise ValueError(f"total_params must be > 0, got {total_params}")
    return total_params


def _check(family: str, cfg: ModelConfig, active: int, total: int, want_active: int, want_total: int | None):
    ea = _rel(active, want_active)
    et = 0.0 if want_total is None else _rel(total, want_total)
    if abs(ea) > TOLERANCE or abs(et) > TOLERANCE:
        goal = f"active={want_active:,}" + ("" if want_total is None else f", total={want_total:,}")
        raise ValueError(
            f"cannot match a {family} model to {goal} within {TOLERANCE:.0%}: the closest achievable is "
            f"active={active:,} ({ea:+.1%}), total={total:,} ({et:+.1%}) with {_describe(cfg)}"
        )
    return cfg


def _describe(cfg: ModelConfig) -> str:
    if cfg.moe is not None:
        return f"num_experts={cfg.moe.num_experts}, top_k={cfg.moe.top_k}, expert ffn_dim={cfg.moe.ffn_dim}"
    if cfg.scone is not None:
        return f"n_fgrams={cfg.scone.n_fgrams}, backbone ffn_dim={cfg.ffn_dim}"
    return f"l3.budget={cfg.l3.budget} rows per layer, backbone ffn_dim={cfg.ffn_dim}"


def _match_l3(base, want_active, want_total, token_freqs, template: L3Config, allocate) -> ModelConfig:
    cfg = replace(base, family="l3", l3=template)
    n_dense = sum(spec.mlp == "dense" for spec in cfg.block_specs())
    m = _multiple_of(3 * base.dim * n_dense, want_active)
    lo, hi = base.vocab_size, base.vocab_size * template.cap

    def active(c: ModelConfig) -> int:
        counts = None if allocate is None else {p: allocate(c.l3.budget) for p in c.l3.positions}
        return count_params(c, token_freqs, counts).active

    for _ in range(4):  # budget and ffn_dim barely interact (active rows only); a few rounds converge
        a1, a2 = active(replace(cfg, ffn_dim=m)), active(replace(cfg, ffn_dim=2 * m))
        ffn = m + (want_active - a1) * m / (a2 - a1)
        cfg = replace(cfg, ffn_dim=max(m, m * round(ffn / m)))
        if want_total is not None:
            t1 = count_params(replace(cfg, l3=replace(cfg.l3, budget=lo))).total
            t2 = count_params(replace(cfg, l3=replace(cfg.l3, budget=hi))).total
            budget = lo + (want_total - t1) * (hi - lo) / (t2 - t1)
            cfg = replace(cfg, l3=replace(cfg.l3, budget=min(hi, max(lo, round(budget)))))
    return _check("l3", cfg, active(cfg), count_params(cfg).total, want_active, want_total)


def _moe_candidates(base, template: MoEConfig, top_ks: Sequence[int], max_experts: int, num_experts=None):
    n_moe = len(template.positions)
    for k in top_ks:
        counts = range(max(2, k + 1), max_experts + 1) if num_experts is None else [num_experts]
        for n_exp in counts:
            if k >= n_exp:
                continue
            if n_exp % template.ep_size == 0:
                yield k, n_exp, n_moe


def _match_moe(
    base, want_active, want_total, template: MoEConfig, top_ks, max_experts, num_experts=None, family="moe"
) -> ModelConfig:
    best = None  # (score, top_k, num_experts, config)
    for k, n_exp, n_moe in _moe_candidates(base, template, top_ks, max_experts, num_experts):
        m = _multiple_of(3 * base.dim * n_moe * k, want_active)
        cfgs = [
            replace(base, family=family, moe=replace(template, top_k=k, num_experts=n_exp, ffn_dim=f))
            for f in (m, 2 * m)
        ]
        (a1, t1), (a2, t2) = ((p.active, p.total) for p in map(count_params, cfgs))
        sa, st = (a2 - a1) / m, (t2 - t1) / m  # d(active)/d(ffn), d(total)/d(ffn): exact, counts are affine

        def score(f: float, a1=a1, t1=t1, sa=sa, st=st, m=m) -> float:
            return max(abs(_rel(a1 + sa * (f - m), want_active)), abs(_rel(t1 + st * (f - m), want_total)))

        # The minimax of two |affine| errors lies at a zero of one of them or where they cross.
        ea0, eas = (a1 - sa * m - want_active) / want_active, sa / want_active  # e_a(f) = ea0 + eas·f
        et0, ets = (t1 - st * m - want_total) / want_total, st / want_total
        points = [-ea0 / eas, -et0 / ets, -(ea0 + et0) / (eas + ets)]
        if eas != ets:
            points.append(-(ea0 - et0) / (eas - ets))
        for p in points:
            for f in (m * np.floor(p / m), m * np.ceil(p / m)):
                f = int(max(m, f))
                err = score(f)
                # Within GOOD_ENOUGH the simplest routing wins (smaller top_k, then fewer experts);
                # otherwise the smallest error does.
                key = (0, k, n_exp, err) if err <= GOOD_ENOUGH else (1, err, k, n_exp)
                if best is None or key < best[0]:
                    best = (key, replace(cfgs[0], moe=replace(cfgs[0].moe, ffn_dim=f)))
    if best is None:
        raise ValueError(
            f"no MoE candidate: top_ks={tuple(top_ks)}, max_experts={max_experts}, "
            f"num_experts={num_experts}, ep_size={template.ep_size} (top_k must be below num_experts, "
            "and ep_size must divide it)"
        )
    cfg = best[1]
    pc = count_params(cfg)
    return _check(family, cfg, pc.active, pc.total, want_active, want_total)


def match(
    base: ModelConfig,
    *,
    family: str,
    total_params: int | None = None,
    sparsity: float | None = None,
    token_freqs: Sequence[float] | np.ndarray | None = None,
    l3: L3Config | None = None,
    moe: MoEConfig | None = None,
    scone: SconeConfig | None = None,
    allocate: Callable[[int], np.ndarray] | None = None,
    top_ks: Sequence[int] = (1, 2, 4, 8),
    max_experts: int = 256,
    num_experts: int | None = None,
) -> ModelConfig:
    """An L3 or MoE config iso-active with the dense `base` (same depth) and with the target total.

    total_params / sparsity: the target total (sparsity is total / active). For "l3" both may be omitted:
    the template's budget is kept and only active is matched. token_freqs (L3 only) weights the active
    rows; with an LZW allocation pass `allocate(budget) -> counts` (e.g. a closure over `lzw_allocate`).
    l3 / moe: templates (default `default_l3(base)` / `default_moe(base)`) whose sizes the search sets.
    family "scone": inference-resident parameters equal to the base's active ones (total is not matched;
    scone: the template, default `default_scone(base)`). num_experts (MoE) fixes the expert count: the
    matcher then chooses only top_k (from top_ks) and the expert ffn_dim.
    Raises ValueError naming the closest achievable numbers when no config is within 2%.
    """
    if base.family != "dense":
        raise ValueError(f"match needs a dense base config, got family={base.family!r}")
    want_active = count_params(base).active
    want_total = _target_total(want_active, total_params, sparsity)
    if family == "l3":
        return _match_l3(base, want_active, want_total, token_freqs, l3 or default_l3(base), allocate)
    if family == "scone":
        return _match_scone(base, want_active, scone or default_scone(base))
    if family in EXPERT_FAMILIES:  # hash_moe: the same search, without a router to count
        if want_total is None:
            raise ValueError(
                f"family={family!r} needs total_params or sparsity (the expert count follows from it)"
            )
        template = moe or default_moe(base)
        return _match_moe(base, want_active, want_total, template, top_ks, max_experts, num_experts, family)
    raise ValueError(f"family must be 'l3', 'moe', 'hash_moe' or 'scone', got {family!r}")


def matched_set(
    base: ModelConfig,
    total_params: int | None = None,
    *,
    token_freqs: Sequence[float] | np.ndarray | None = None,
    l3: L3Config | None = None,
    moe: MoEConfig | None = None,
    allocate: Callable[[int], np.ndarray] | None = None,
) -> dict[str, ModelConfig]:
    """{dense, l3, moe}: mutually iso-active; l3 hits `total_params` (or keeps its template budget when
    None) and moe is matched to the l3 model's actual total, so (l3, moe) are iso-total within 2%."""
    l3_cfg = match(
        base, family="l3", total_params=total_params, token_freqs=token_freqs, l3=l3, allocate=allocate
    )
    moe_cfg = match(base, family="moe", total_params=count_params(l3_cfg).total, moe=moe)
    return {"dense": base, "l3": l3_cfg, "moe": moe_cfg}

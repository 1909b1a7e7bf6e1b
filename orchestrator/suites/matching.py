"""A comparison group's models: each family resolved on the group's corpus (L3 rows per token weighted by
it), matched iso-sparse (L3_SPEC §5), with the planned accounting and errors logged as match/<key>.
"""

import functools
from dataclasses import replace

from orchestrator.suites.schema import Error
from workloads.models.config import EXPERT_FAMILIES

# the families whose models depend on the L3 template (MoE and hash-MoE: iso-total with it)
MODEL_FAMILIES = ("l3", *EXPERT_FAMILIES)
REMOTE_SOURCES = ("hf",)  # corpora not prepared at validation (network, size): planned numbers estimated


@functools.cache
def _resolve_cached(spec, data_cfg):
    """(ModelConfig, ParamCount) of `spec` as a job on `data_cfg` runs it: the data is prepared (cached) and
    the L3 rows per token are weighted by its corpus. Estimated (budget / vocab rows, `ParamCount.estimated`,
    logged as match/estimated) when there is no corpus here: a model-free group (data_cfg None) or a
    remote corpus (kind in REMOTE_SOURCES), which only the job downloads and tokenizes on its cluster."""
    from workloads.jobs.setup import base_model_config, corpus_for, prepare_data, resolve_model_config
    from workloads.models.accounting import count_params

    corpus = None
    local = data_cfg is not None and data_cfg.source.kind not in REMOTE_SOURCES
    if local and spec.family in MODEL_FAMILIES:
        base = base_model_config(spec)
        # The window length changes neither the tokens nor the allocation (the job checks it itself).
        data_cfg = replace(data_cfg, seq_len=min(data_cfg.seq_len, base.max_seq_len))
        corpus = corpus_for(spec, prepare_data(data_cfg, base))
    cfg = resolve_model_config(spec, corpus)
    if cfg.l3 is None or corpus is None:
        return cfg, count_params(cfg)
    counts = {pos: corpus.allocate(cfg.l3.budget) for pos in cfg.l3.positions}
    return cfg, count_params(cfg, corpus.token_freqs, counts)


def override_errors(overrides: dict, families: list[str], path: str) -> list[Error]:
    """Overrides (and an allocation file) for a family the matrix does not run would silently do nothing."""
    from workloads.jobs.spec import OVERRIDE_FAMILIES, applies

    errors = []
    for name in (n for n in OVERRIDE_FAMILIES if n in overrides):
        if not any(applies(name, f) for f in families):
            where = path if name == "allocation_path" else f"{path}.overrides"
            what = " or ".join(map(repr, OVERRIDE_FAMILIES[name]))
            errors.append((f"{where}.{name}", f"applies to family {what}, which matrix.families lacks"))
    return errors


def group_models(section: dict, preset: str, families: list[str], data_cfg, path: str, errors: list[Error]):
    """{family: (ModelSpec, ModelConfig, ParamCount)} of one comparison group on `data_cfg` (dense and l3
    always resolved: they are the references of the match errors); None when a match is impossible.
    l3_* overrides and the allocation file go to L3 and MoE (matched to its group's L3), moe_* to MoE."""
    from workloads.jobs.setup import FieldError
    from workloads.jobs.spec import ModelOverrides, ModelSpec, applies

    raw = section.get("overrides") or {}
    if not set(MODEL_FAMILIES) & set(families):
        data_cfg = None  # a dense-only group: its L3 reference is estimated, no corpus is prepared for it
    out = {}
    for family in dict.fromkeys(["dense", "l3", *families]):
        overrides = ModelOverrides(**{k: v for k, v in raw.items() if applies(k, family)})
        alloc = section.get("allocation_path") if applies("allocation_path", family) else None
        spec = ModelSpec(preset, family, overrides, alloc)
        try:
            cfg, count = _resolve_cached(spec, data_cfg)
        except FieldError as e:  # the model's own fields here; the job reports its data at the data's path
            if e.field.startswith("overrides."):
                errors.append((f"{path}.{e.field}", e.message))
                return None
            cfg, count = _resolve_cached(spec, None)
        except (ValueError, OSError) as e:
            errors.append((path, f"preset {preset!r} as {family}: {e}"))
            return None
        out[family] = (spec, cfg, count)
    return out


def tolerance_errors(models: dict, families: list[str], group: str, tolerance: float, path: str) -> list:
    """One error per family of the group whose planned active or total error exceeds `tolerance`."""
    errors = []
    for family in families:
        planned = match(models, family)
        for key, ref in (("active_rel_err", "dense"), ("total_rel_err", "l3")):
            err = planned.get(key)
            if err is None or abs(err) <= tolerance:
                continue
            what = "active" if key == "active_rel_err" else "total"
            mine, theirs = models[family][2], models[ref][2]
            n_mine, n_ref = (mine.active, theirs.active) if what == "active" else (mine.total, theirs.total)
            off = f"{family} {what} {n_mine:,} vs {ref} {n_ref:,} is {err:+.2%} off"
            errors.append((path, f"group {group}: {off}, over the match_tolerance {tolerance:.2%}"))
    return errors


def match(models: dict, family: str) -> dict[str, float]:
    """The planned accounting of `family` in its group (L3_SPEC §5), logged as match/<key>."""
    count = models[family][2]
    dense, l3 = models["dense"][2], models["l3"][2]
    out = {
        "params_active": float(count.active),
        "params_active_max": float(count.active_max),
        "params_active_min": float(count.active_min),
        "params_total": float(count.total),
        "sparsity": count.total / count.active,
        "active_rel_err": count.active / dense.active - 1.0,
    }
    if any(models[f][2].estimated for f in models):  # a model-free group: no corpus to weight L3 rows by
        out["estimated"] = 1.0
    if family in EXPERT_FAMILIES:
        out["total_rel_err"] = count.total / l3.total - 1.0
    return out

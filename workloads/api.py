"""What the orchestrator reads of workloads without torch: the family and preset names, the model section's
type, a model's counts as plain data for `clusters`, and a job's context and JSON form. Its other door is
`workloads.group` (a comparison group's models, with torch); the import contracts allow only these two."""

from collections.abc import Mapping, Sequence

import numpy as np

from workloads.jobs.result import JobContext as JobContext
from workloads.jobs.result import to_jsonable as to_jsonable
from workloads.jobs.spec import ModelOverrides as ModelOverrides
from workloads.models import accounting, presets
from workloads.models.config import EXPERT_FAMILIES as EXPERT_FAMILIES
from workloads.models.config import FAMILIES as FAMILIES
from workloads.models.config import ModelConfig

preset_names = presets.names
preset_model = presets.get  # (preset, family) -> ModelConfig


def preset_notes() -> dict[str, str]:
    """{preset: what it is for}, in the presets' order."""
    return {name: presets.PRESETS[name].note for name in presets.names()}


def model_facts(
    cfg: ModelConfig,
    token_freqs: Sequence[float] | np.ndarray | None = None,
    l3_counts: Mapping[int, Sequence[int] | np.ndarray] | None = None,
) -> dict:
    """`cfg` as the fields of `clusters.shapes.ModelShape` (without its name; "l3" and "moe" as the fields
    of L3Shape / MoEShape, or None): counts and FLOPs from `accounting`, handed over, never re-derived.
    token_freqs / l3_counts weight the L3 rows per token as in `count_params` (else budget / vocab)."""
    pc = accounting.count_params(cfg, token_freqs=token_freqs, l3_counts=l3_counts)
    l3 = moe = None
    if cfg.l3 is not None:
        width, tables = accounting.l3_row_width(cfg), pc.active_by_category["l3_tables"]
        rows = width * len(cfg.l3.positions)  # parameters of one row in every L3 layer
        most = max(1, round((pc.active_max - pc.active + tables) / rows))
        l3 = _copied(cfg.l3, "positions d_emb d_up") | {"rows": cfg.l3.budget, "row_width": width}
        l3 |= {"rows_per_token_mean": tables / rows, "rows_per_token_max": most}
    if cfg.moe is not None:
        moe = _copied(cfg.moe, "positions num_experts top_k ffn_dim capacity_factor min_capacity")
    fixed, per_seq = accounting.train_flops_terms(cfg, pc.flops_active)
    return {
        **_copied(cfg, "vocab_size dim n_layers n_heads n_kv_heads ffn_dim max_seq_len tie_embeddings"),
        **{
            f"params_{k}": pc.by_category.get(k, 0)
            for k in (*accounting.CATEGORIES, accounting.FGRAM_CATEGORY)
        },
        "fgram_rows": cfg.scone.n_fgrams if cfg.scone is not None else 0,
        "params_active": pc.flops_active,  # FLOPs: an embedding lookup multiplies nothing
        "blocks": accounting.block_counts(cfg),
        # SCONE trains A_fgram beside the model: its FLOPs per token join the fixed term (a bound)
        "train_flops": (fixed + accounting.fgram_plan_train_flops_per_token(cfg), per_seq),
        "l3": l3,
        "moe": moe,
    }


def _copied(config, names: str) -> dict:
    """The space-separated fields `names` of a workloads config (the clusters shape names them alike)."""
    return {name: getattr(config, name) for name in names.split()}

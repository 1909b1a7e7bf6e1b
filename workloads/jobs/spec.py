"""Which model a job runs: `ModelSpec` (a preset as one family, `ModelOverrides`, an allocation file),
validated on construction; and the family × override rule, once (`OVERRIDE_FAMILIES`, `applies`)."""

from dataclasses import dataclass, field
from typing import Annotated

from workloads.fields import Ge, NonNegFloat, NonNegInt, PosFloat, PosInt, check_fields
from workloads.models import presets
from workloads.models.config import EXPERT_FAMILIES, Allocation, Family, L3Impl, Positions

L3_FIELDS = ("l3_cap", "l3_allocation", "l3_tied", "l3_residual", "l3_impl", "l3_positions")
# moe_<name> overrides MoEConfig.<name>; moe_top_k and moe_num_experts fix what the matcher may choose.
HASH_MOE_FIELDS = ("moe_top_k", "moe_num_experts")  # the MoE knobs a hash-routed MoE has
MOE_FIELDS = (
    "moe_top_k", "moe_ep_size", "moe_use_rts", "moe_top2_sampling", "moe_num_experts", "moe_capacity_factor",
    "moe_eval_capacity_factor", "moe_min_capacity", "moe_drop_tokens", "moe_aux_loss_coef",
)  # fmt: skip
# The family x override rule, once: the families each override (and the allocation file) applies to; a MoE
# model is matched to its group's L3 model, which the l3_* fields and allocation_path describe. Any other
# override (vocab_size) applies to every family.
# scone_<name> overrides SconeConfig.<name>: SCONE's scaling axes (f-grams; A_fgram's depth and width).
SCONE_FIELDS = ("scone_n_fgrams", "scone_max_n", "scone_min_count", "scone_fgram_layers",
                "scone_depth_multiplier", "scone_fgram_ffn_dim")  # fmt: skip
# hash_moe (experts routed by token id) is matched like the MoE and has only its expert count and top_k.
OVERRIDE_FAMILIES = {
    **dict.fromkeys((*L3_FIELDS, "allocation_path"), ("l3", *EXPERT_FAMILIES)),
    **dict.fromkeys(MOE_FIELDS, ("moe",)),
    **dict.fromkeys(HASH_MOE_FIELDS, EXPERT_FAMILIES),
    **dict.fromkeys(SCONE_FIELDS, ("scone",)),
}


def applies(name: str, family: str) -> bool:
    """Whether override `name` (or "allocation_path") changes a `family` model (OVERRIDE_FAMILIES)."""
    return family in OVERRIDE_FAMILIES.get(name, (family,))


@dataclass(frozen=True)
class ModelOverrides:
    """Changes to a preset, applied to its dense base / L3 / MoE templates before iso-sparse matching.

    vocab_size: the model's vocabulary (the tokenizer is trained to it); the L3 budget keeps the preset's
        rows per token. l3_*: fields of L3Config (l3_tied also sets d_emb = dim; l3_positions: the blocks
        the L3 layers follow, e.g. [0, 1] early, the paper's middle by default); for a MoE model they
        describe the L3 model it is matched to. moe_*: fields of MoEConfig (DeepSpeed's: capacity factor
        for training and eval, min capacity, drop_tokens=False for dropless training, aux-loss coefficient);
        moe_top_k / moe_num_experts fix the routing / expert count the matcher may use (it still sets the
        expert width so the model stays iso-active and iso-total). scone_*: fields of SconeConfig (the
        number of f-grams, the longest f-gram, discovery's min count, A_fgram's depth as layers or a
        multiple of the model's, A_fgram's MLP width). None keeps the preset's value.
    """

    vocab_size: PosInt | None = None
    l3_cap: PosInt | None = None
    l3_allocation: Allocation | None = None
    l3_tied: bool | None = None
    l3_residual: bool | None = None
    l3_impl: L3Impl | None = None
    l3_positions: Positions | None = None
    moe_top_k: PosInt | None = None
    moe_ep_size: PosInt | None = None
    moe_use_rts: bool | None = None
    moe_top2_sampling: bool | None = None
    moe_num_experts: Annotated[int, Ge(2)] | None = None
    moe_capacity_factor: PosFloat | None = None
    moe_eval_capacity_factor: PosFloat | None = None
    moe_min_capacity: NonNegInt | None = None
    moe_drop_tokens: bool | None = None
    moe_aux_loss_coef: NonNegFloat | None = None
    scone_n_fgrams: PosInt | None = None
    scone_max_n: Annotated[int, Ge(2)] | None = None
    scone_min_count: PosInt | None = None
    scone_fgram_layers: PosInt | None = None
    scone_depth_multiplier: PosFloat | None = None
    scone_fgram_ffn_dim: PosInt | None = None

    def __post_init__(self) -> None:
        if isinstance(self.l3_positions, list):  # YAML gives a list; the frozen spec is hashed (cached)
            object.__setattr__(self, "l3_positions", tuple(self.l3_positions))
        check_fields(self)

    def given(self, names: tuple[str, ...]) -> list[str]:
        return [n for n in names if getattr(self, n) is not None]


@dataclass(frozen=True)
class ModelSpec:
    """Which model a job runs: a preset as one family, with overrides and an optional allocation file."""

    preset: str
    family: Family
    overrides: ModelOverrides = field(default_factory=ModelOverrides)
    allocation_path: str | None = None

    def __post_init__(self) -> None:
        check_fields(self)
        if self.preset not in presets.names():
            presets._lookup(self.preset)  # raises "unknown preset ...; did you mean ...?"
        given = [f"overrides.{n}" for n in self.overrides.given((*L3_FIELDS, *MOE_FIELDS, *SCONE_FIELDS))]
        given += ["allocation_path"] if self.allocation_path is not None else []
        for name in (n for n in given if not applies(n.removeprefix("overrides."), self.family)):
            first = OVERRIDE_FAMILIES[name.removeprefix("overrides.")][0]
            raise ValueError(f"{name} applies to family '{first}', not {self.family!r}")

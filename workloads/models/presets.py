"""Named model presets: `get(name, family)` -> ModelConfig; `python -m workloads.models.presets` prints them.

Each preset is a dense backbone plus its L3 recipe. family "l3" is the paper's recipe (L3_SPEC §1) made
iso-active with the dense backbone (`isosparse.match`); family "moe" is the MoE model iso-active with the
dense backbone and iso-total with that L3 model. Sizes the paper does not publish (depth, width, heads,
ffn_dim) are our choice, fitted to its parameter counts; see `_paper`.
"""

import difflib
import functools
from dataclasses import dataclass

from workloads.models.accounting import count_params
from workloads.models.config import FAMILIES, L3Config, ModelConfig
from workloads.models.isosparse import default_l3, match

PAPER_VOCAB = 180_000
PAPER_L3_ROWS = 710_000  # v per L3 layer


@dataclass(frozen=True)
class Preset:
    """A dense backbone, its L3 recipe, and what it is for."""

    dense: ModelConfig
    l3: L3Config
    note: str


def _preset(note: str, l3_budget: int | None = None, **dense) -> Preset:
    base = ModelConfig(**dense)
    return Preset(dense=base, l3=default_l3(base, budget=l3_budget), note=note)


def _paper(note: str, **dense) -> Preset:
    """Paper sizes (L3_SPEC §1): 180K vocab, untied embeddings, 2 L3 layers of 710K rows, cap 512,
    d_emb = dim/2, d_up = 4096. Width is set by the paper's total: 2·710K·(dim + dim/2) table parameters
    plus the 180K·dim input embedding must make up total - active, which fixes dim ≈ 1024 for 3.1B and
    ≈ 1920 for 7B. Depth (the paper mentions ~20 blocks for the 800M class), heads (head_dim 128, GQA)
    and ffn_dim (set to land on the active count) are our choices.
    """
    return _preset(note, l3_budget=PAPER_L3_ROWS, vocab_size=PAPER_VOCAB, max_seq_len=2048, **dense)


PRESETS: dict[str, Preset] = {
    "debug": _preset(
        "CPU smoke tests: a train step in well under a second",
        vocab_size=512,  # > 256 bytes + <|endoftext|>: the smallest byte-level BPE vocabulary
        dim=64,
        n_layers=4,
        n_heads=4,
        n_kv_heads=2,
        ffn_dim=176,
        max_seq_len=256,  # DataConfig's default seq_len, so that every default runs
    ),
    "tiny": _preset(
        "a few M parameters; CPU/laptop runs",
        vocab_size=8192,
        dim=256,
        n_layers=6,
        n_heads=8,
        n_kv_heads=4,
        ffn_dim=704,
        max_seq_len=512,
    ),
    "small": _preset(
        "~40M active; single-GPU runs",
        vocab_size=32768,
        dim=512,
        n_layers=8,
        n_heads=8,
        n_kv_heads=4,
        ffn_dim=1408,
        max_seq_len=1024,
    ),
    "paper-800m": _paper(
        "paper 800M class: 809M dense active; L3 803M active / 3.1B total",
        dim=1024,
        n_layers=20,
        n_heads=8,
        n_kv_heads=2,
        ffn_dim=9344,
    ),
    "paper-1.5b": _paper(
        "paper 1.5B class (the paper's totals for it are not public; the recipe gives ~5B)",
        dim=1536,
        n_layers=24,
        n_heads=12,
        n_kv_heads=4,
        ffn_dim=9728,
    ),
    "paper-2.6b": _paper(
        "paper 2.6B class: 2.6B active / 7B total",
        dim=1920,
        n_layers=32,
        n_heads=15,
        n_kv_heads=5,
        ffn_dim=10496,
    ),
}


def names() -> tuple[str, ...]:
    return tuple(PRESETS)


def _lookup(name: str) -> Preset:
    if name in PRESETS:
        return PRESETS[name]
    close = difflib.get_close_matches(name, PRESETS, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"unknown preset {name!r}{hint} (known: {', '.join(PRESETS)})")


@functools.cache
def get(name: str, family: str = "dense") -> ModelConfig:
    """The preset `name` as a `family` model ("dense", "l3" or "moe"); exact names only."""
    preset = _lookup(name)
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r} for preset {name!r}; choose one of {FAMILIES}")
    if family == "dense":
        return preset.dense
    l3 = match(preset.dense, family="l3", l3=preset.l3)
    if family == "l3":
        return l3
    return match(preset.dense, family="moe", total_params=count_params(l3).total)


def _shape(cfg: ModelConfig) -> str:
    if cfg.moe is not None:
        return f"{cfg.moe.num_experts} experts, top-{cfg.moe.top_k}, ffn {cfg.moe.ffn_dim}"
    if cfg.l3 is not None:
        return f"ffn {cfg.ffn_dim}, L3@{','.join(map(str, cfg.l3.positions))} {cfg.l3.budget:,} rows"
    return f"ffn {cfg.ffn_dim}"


def _human(n: int) -> str:
    for scale, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= scale:
            return f"{n / scale:,.{3 if unit == 'B' else 1}f}{unit}"
    return str(n)


def main() -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="isosparse model presets (active per L3_SPEC §5; L3 rows at budget / vocab)")
    for column in ("preset", "family", "layers×dim", "shape", "active", "total", "sparsity"):
        table.add_column(
            column, justify="right" if column in ("active", "total", "sparsity") else "left", no_wrap=True
        )
    for name in PRESETS:
        for family in FAMILIES:
            cfg = get(name, family)
            pc = count_params(cfg)
            label = name if family == "dense" else ""
            table.add_row(
                label,
                family,
                f"{cfg.n_layers} × {cfg.dim}",
                _shape(cfg),
                _human(pc.active),
                _human(pc.total),
                f"{pc.sparsity:.2f}",
            )
        table.add_section()
    console = Console(width=max(Console().width, 112))  # rich assumes 80 columns when piped
    console.print(table)
    for name, preset in PRESETS.items():
        console.print(f"[bold]{name}[/bold]: {preset.note}")


if __name__ == "__main__":
    main()

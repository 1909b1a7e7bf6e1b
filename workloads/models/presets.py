"""Named model presets: `get(name, family)` -> ModelConfig; `python -m workloads.models.presets` prints them.
Details: docs/workloads.md#workloadsmodelspresets."""

import difflib
import functools
from dataclasses import dataclass, replace

from workloads.models.accounting import count_params
from workloads.models.config import FAMILIES, L3Config, ModelConfig, SconeConfig
from workloads.models.isosparse import default_l3, default_scone, match

PAPER_VOCAB = 180_000
PAPER_L3_ROWS = 710_000  # v per L3 layer
# The paper's Table 1 as L3_SPEC quotes it: {preset: (dense active = total, L3 active, L3 total)}. None:
# not in our sources (the 1.5B class's counts are not quoted; only its active size is known).
PAPER_TABLE_1: dict[str, tuple[float, float | None, float | None]] = {
    "paper-800m": (809e6, 803e6, 3.1e9),
    "paper-1.5b": (1.5e9, None, None),
    "paper-2.6b": (2.6e9, 2.6e9, 7.0e9),
}


@dataclass(frozen=True)
class Preset:
    """A dense backbone, its L3 and SCONE recipes, and what it is for."""

    dense: ModelConfig
    l3: L3Config
    note: str
    scone: SconeConfig


def _preset(
    note: str,
    l3_budget: int | None = None,
    d_emb: int | None = None,
    scone: SconeConfig | None = None,
    **dense,
) -> Preset:
    base = ModelConfig(**dense)
    l3 = default_l3(base, budget=l3_budget)
    l3 = l3 if d_emb is None else replace(l3, d_emb=d_emb)
    return Preset(dense=base, l3=l3, note=note, scone=scone or default_scone(base))


def _paper(note: str, d_emb: int, **dense) -> Preset:
    """Paper sizes (L3_SPEC §1), counted as its Table 1 (L3_SPEC §5: embedding and head fully active, so
    the dense model's active = total). Given by the paper: 180K vocab, untied embeddings, 2 L3 layers of
    v = 710K rows at middle depth, cap 512, d_up = 4096, d_emb "about half" the width.
    Chosen here, to land on Table 1:
      dim      the L3 total: total - active ≈ 2·710K·(dim + d_emb) table parameters (W_up, W_mix and
               the norms are paid for by a smaller ffn_dim), so 3.1B - 0.8B gives dim + d_emb ≈ 1600
               and 7B - 2.6B gives ≈ 3100: dim 1024 and 2048.
      d_emb    576 for the 800M class (0.56·dim: 512 would give 2.99B, -3.5%), dim/2 otherwise.
      depth    20 blocks for the 800M class (the paper mentions ~20), 24 and 28 for the larger ones;
               heads of 128 dims with grouped-query attention (4 query heads per kv head).
      ffn_dim  the dense active count: 180K·dim·2 embedding parameters are ~45% of 809M at dim 1024,
               so the decoder is smaller than a "809M decoder" (multiples of 128).
    """
    return _preset(
        note, l3_budget=PAPER_L3_ROWS, d_emb=d_emb, vocab_size=PAPER_VOCAB, max_seq_len=2048, **dense
    )


PRESETS: dict[str, Preset] = {
    "debug": _preset(
        "CPU smoke tests: a train step in well under a second",
        scone=SconeConfig(n_fgrams=1024, fgram_layers=1),
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
        scone=SconeConfig(n_fgrams=16384, fgram_layers=2),
        vocab_size=8192,
        dim=256,
        n_layers=6,
        n_heads=8,
        n_kv_heads=4,
        ffn_dim=704,
        max_seq_len=512,
    ),
    "small": _preset(
        "~57M active; single-GPU runs",
        vocab_size=32768,
        dim=512,
        n_layers=8,
        n_heads=8,
        n_kv_heads=4,
        ffn_dim=1408,
        max_seq_len=1024,
    ),
    "paper-800m": _paper(
        "paper 800M class: dense 809M / 809M; L3 803M active / 3.1B total",
        d_emb=576,
        dim=1024,
        n_layers=20,
        n_heads=8,
        n_kv_heads=2,
        ffn_dim=6272,
    ),
    "paper-1.5b": _paper(
        "paper 1.5B class (its L3 counts are not in our sources; the recipe gives ~4.8B total)",
        d_emb=768,
        dim=1536,
        n_layers=24,
        n_heads=12,
        n_kv_heads=3,
        ffn_dim=7296,
    ),
    "paper-2.6b": _paper(
        "paper 2.6B class: 2.6B active / 7B total",
        d_emb=1024,
        dim=2048,
        n_layers=28,
        n_heads=16,
        n_kv_heads=4,
        ffn_dim=9088,
    ),
    "paper-olmo-1b": _preset(
        "SCONE paper shape: OLMo-1B backbone (16 × 2048, 50,304 vocab, tied) + 10M f-grams (K = 5), A_fgram "
        "as deep as the backbone; F = 41 GB at fp16 in host memory",
        scone=SconeConfig(n_fgrams=10_000_000),
        vocab_size=50_304,
        dim=2048,
        n_layers=16,
        n_heads=16,
        n_kv_heads=16,
        ffn_dim=8192,
        max_seq_len=2048,
        tie_embeddings=True,
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
    """The preset `name` as a `family` model (one of FAMILIES); exact names only."""
    preset = _lookup(name)
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r} for preset {name!r}; choose one of {FAMILIES}")
    if family == "dense":
        return preset.dense
    if family == "scone":
        return match(preset.dense, family="scone", scone=preset.scone)
    l3 = match(preset.dense, family="l3", l3=preset.l3)
    if family == "l3":
        return l3
    return match(preset.dense, family=family, total_params=count_params(l3).total)


def _shape(cfg: ModelConfig) -> str:
    if cfg.scone is not None:
        sc = cfg.scone
        return f"ffn {cfg.ffn_dim}, {_human(sc.n_fgrams)} f-grams, A_fgram ×{sc.layers(cfg.n_layers)}"
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


def _vs_paper(name: str, family: str, pc) -> str:
    """ours vs the paper's Table 1 ("active / total"), with the relative errors; "" when not quoted."""
    if name not in PAPER_TABLE_1 or family in ("moe", "hash_moe", "scone"):
        return ""
    dense, l3_active, l3_total = PAPER_TABLE_1[name]
    active, total = (dense, dense) if family == "dense" else (l3_active, l3_total)
    if active is None:
        return "not quoted"
    errors = f"{pc.active / active - 1:+.1%}, {pc.total / total - 1:+.1%}"
    return f"{_human(round(active))} / {_human(round(total))} ({errors})"


# The table's columns in the order they are dropped when the terminal is narrower than the table
# (`--wide` keeps every one): the paper's quote first, preset/family/active/total never.
DROP_ORDER = ("paper Table 1 (err)", "shape", "layers×dim", "sparsity")


def main(argv: list[str] | None = None) -> None:
    """Print every preset as every family; `--wide`: every column whatever the terminal's width."""
    import shutil
    import sys

    from rich import box
    from rich.console import Console
    from rich.table import Table

    wide = "--wide" in (sys.argv[1:] if argv is None else argv)
    columns = [
        "preset",
        "family",
        "layers×dim",
        "shape",
        "active",
        "total",
        "sparsity",
        "paper Table 1 (err)",
    ]
    rows = []
    for name in PRESETS:
        for family in FAMILIES:
            cfg = get(name, family)
            pc = count_params(cfg)
            active = ("~" if pc.estimated else "") + _human(pc.active)
            label = name if family == "dense" else ""
            rows.append(
                [
                    label,
                    family,
                    f"{cfg.n_layers} × {cfg.dim}",
                    _shape(cfg),
                    active,
                    _human(pc.total),
                    f"{pc.sparsity:.2f}",
                    _vs_paper(name, family, pc),
                ]
            )
    width = shutil.get_terminal_size().columns if sys.stdout.isatty() else 240

    def build(shown: list[str]) -> Table:
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1, 0, 0))
        for column in shown:
            table.add_column(
                column, justify="right" if column in ("active", "total", "sparsity") else "left", no_wrap=True
            )
        for i, row in enumerate(rows):
            table.add_row(*(row[columns.index(c)] for c in shown), end_section=i % len(FAMILIES) == 3)
        return table

    shown = list(columns)
    table = build(shown)
    for column in () if wide else DROP_ORDER:
        if Console(width=10_000).measure(table).maximum <= width:
            break
        shown.remove(column)
        table = build(shown)
    needed = Console(width=10_000).measure(table).maximum
    console = Console(width=max(width, needed) if wide else width)
    console.print(
        "isosparse model presets (L3_SPEC §5: embeddings counted fully; L3 active marked ~ is estimated at "
        "budget / vocab rows per token, a job weights it by its corpus)",
        highlight=False,
    )
    console.print(table)
    for name, preset in PRESETS.items():
        console.print(f"[bold]{name}[/bold]: {preset.note}", highlight=False)


if __name__ == "__main__":
    main()

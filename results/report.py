"""The suite report: a self-contained HTML page opening with the verdict (`results.seeds`), figures chosen by
what the suite varies, detail tables folded; a Markdown summary; every figure as PNG and table as CSV.
Details: docs/results.md#resultsreport."""

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from results import analysis, contention, load, names, plots, quality_plots, schema, seeds
from results.report_page import MARKDOWN_MAX_COLUMNS, render_html, render_markdown, to_markdown  # noqa: F401

HTML_NAME = "report.html"
MARKDOWN_NAME = "report.md"
FIGURE_DIR = "figures"
TABLE_DIR = "tables"  # every detail table as CSV (the HTML folds them, the Markdown links them)


@dataclass(frozen=True)
class LoadArrays:
    """Raw load-balance arrays for the expert-load / rows-per-token figure (not stored in the run table).

    expert_tokens: label -> tokens routed to each expert (any shape; flattened).
    l3_rows_per_token: label -> rows per token d_t of an L3 layer (one entry per token id).
    """

    expert_tokens: Mapping[str, np.ndarray] = field(default_factory=dict)
    l3_rows_per_token: Mapping[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class ReportPaths:
    html: Path
    markdown: Path
    figures: tuple[Path, ...]
    tables: tuple[Path, ...] = ()


@dataclass(frozen=True)
class _Section:
    """A report section: a table and/or a note. problem: the note reports something that went wrong
    (styled as an error), not just an empty section ("none", "no finished infer runs")."""

    title: str
    table: pd.DataFrame | None = None
    note: str = ""
    problem: bool = False


@dataclass(frozen=True)
class _Verdict:
    """What the report opens with: the ordering the seeds support and the narrow table behind it."""

    lines: tuple[str, ...]
    table: pd.DataFrame | None
    note: str


VERDICT_NOTE = (
    "{what}, lower is better; mean ± sd over seeds. Δ vs dense is paired by seed (each config minus its "
    "group's dense model trained with the same seed; a suite without dense pairs with its first config), "
    "with a 95% Student-t interval; 'within noise': the interval covers 0."
)
QUALITY = {
    "val loss": "Validation loss per token",
    "val bpb": "Validation bits per byte (the runs mix tokenizers: loss per token would not compare)",
}


def _verdict(runs: pd.DataFrame) -> _Verdict:
    metric, short = seeds.quality(runs)
    try:
        paired = seeds.paired_table(runs, metric)
    except ValueError as err:
        return _Verdict((), None, f"no verdict: {err}")
    if paired.empty:
        return _Verdict((), None, f"no verdict: no finished train runs with {metric}")
    note = VERDICT_NOTE.format(what=QUALITY[short])
    return _Verdict(
        tuple(seeds.verdict(paired) + seeds.gain_kept(paired)), seeds.narrow(runs, paired, metric), note
    )


def as_run_table(runs: pd.DataFrame) -> pd.DataFrame:
    """An `mlflow.search_runs` frame (it has "tags."/"metrics."/"params." columns) → run table; a run table
    is re-validated by `schema.coerce`."""
    if any(c.startswith(("tags.", "metrics.", "params.")) for c in runs.columns) or len(runs) == 0:
        return load.runs_from_mlflow(runs)
    return schema.coerce(runs)


def _try_table(title: str, build: Callable[[], pd.DataFrame], empty_note: str) -> _Section:
    try:
        table = build()
    except ValueError as err:
        return _Section(title, note=f"not built: {err}", problem=True)
    return _Section(title, table) if not table.empty else _Section(title, note=empty_note)


def _sections(runs: pd.DataFrame) -> list[_Section]:
    tol = f"{analysis.MATCH_TOLERANCE:.0%}"
    iso = _try_table(
        "Iso-active comparison (vs dense of each group)",
        lambda: analysis.iso_sparse_table(runs),
        "no finished train runs",
    )
    if analysis.mixes_tokenizers(runs):
        unit = (
            "The runs use different tokenizers (their validation bytes per token differ), so val_loss per "
            "token does not compare across rows: read val_bpb (bits per byte) and delta_val_bpb."
        )
        iso = replace(iso, note=f"{iso.note} {unit}".strip())
    out = [
        iso,
        _try_table(
            "L3 vs MoE at equal total params",
            lambda: analysis.l3_vs_moe_table(runs),
            "no group holds both an L3 and a MoE train run",
        ),
    ]
    train_flags = contention.config_contended(runs, "train")
    if runs["family"].eq("scone").fillna(False).any():
        out.append(_scone_section(runs))
    flagged = sum(int(s.table["match_flag"].fillna(False).sum()) for s in out if s.table is not None)
    note = (
        f"{flagged} comparison(s) off by more than {tol}: highlighted in the tables below"
        if flagged
        else f"none above {tol}"
    )  # the flagged rows are in the tables below: listing them again would repeat a table
    note += (
        ". active_error / total_error are measured (each run's params_active / params_total, L3 rows "
        "weighted by its training corpus); planned_match_error is the suite's plan (MLflow match/*)"
    )
    out = [_marked(s, train_flags, TRAIN_SPEED) for s in out]
    out.insert(0, _Section(f"Match errors above {tol}", None, note, problem=bool(flagged)))
    if runs["kind"].eq("eval").fillna(False).any():
        tasks = lambda: analysis.downstream_table(runs)  # noqa: E731
        out.append(_try_table("Downstream tasks (lm-evaluation-harness)", tasks, "no finished eval runs"))
    out += _scaling_sections(runs)
    for axis in analysis.ABLATION_AXES:
        table = analysis.ablation_table(runs, axis)
        if not table.empty:
            out.append(_marked(_Section(f"Ablation: {axis}", table), train_flags, TRAIN_SPEED))
    out += _speed_sections(runs)
    bad = runs[~runs["status"].eq("FINISHED").fillna(False)]
    cols = ["run_id", "family", "preset", "group", "kind", "seed", "status", "outcome", "error"]
    cols = [c for c in cols if c in bad.columns]
    listed = bad[cols] if len(bad) else None
    out.append(_Section("Runs not finished", listed, "" if len(bad) else "none", bool(len(bad))))  # unfolded
    return out


TRAIN_SPEED = ["tokens_per_s", "tokens_per_s_std", "tokens_per_s_ratio", "floor_frac"]


def _marked(section: _Section, flags: pd.DataFrame, columns: list[str]) -> _Section:
    """The section with its speed cells measured under contention marked "~", and the footnote."""
    if section.table is None or flags.empty:
        return section
    table = contention.mark(section.table, flags, columns, with_dense=("tokens_per_s_ratio",))
    if not contention.any_marked(table):
        return replace(section, table=table)
    return replace(section, table=table, note=f"{section.note} {contention.FOOTNOTE}".strip())


def _speed_sections(runs: pd.DataFrame) -> list[_Section]:
    """Decode vs dense (interleaved ratios preferred; the summary names clean ratios only), then the
    per-batch-size inference table, contended cells marked."""
    infer = _inference_table(runs)
    if infer.empty:
        return [_Section("Inference (per batch size)", None, "no finished infer runs")]
    flags = contention.config_contended(runs, "infer")
    ratios = contention.decode_ratios(runs)
    note = (
        f"{contention.ratio_summary(ratios)}. Ratios of runs timed in one process "
        f"({contention.INTERLEAVED}, `timing: {{infer: interleaved}}`) are preferred: load drift cannot "
        "bias them (their p10/p90: the per-round ratio's spread over the rounds of alternating "
        "generations); ratios of separate jobs compare numbers measured at different times."
    )
    if not ratios.empty and ratios["contended"].any():
        ratios = ratios.assign(
            decode_vs_dense=[
                contention.MARK + f"{v:.3f}" if c else f"{v:.3f}"
                for v, c in zip(ratios["decode_vs_dense"], ratios["contended"], strict=True)
            ]
        )
        note += " " + contention.FOOTNOTE
    table = _marked(_Section("Inference (per batch size)", infer), flags, list(contention.INFER_SPEED))
    return [_Section("Decode speed vs dense", ratios if not ratios.empty else None, note), table]


def _scone_section(runs: pd.DataFrame) -> _Section:
    """SCONE vs dense, with the paper's caveat on training compute stated plainly."""
    section = _try_table(
        "SCONE vs dense at equal inference-resident params",
        lambda: analysis.scone_table(runs),
        "no finished SCONE train runs",
    )
    caveat = (
        "SCONE spends more training compute than its inference-matched dense baseline (the paper says so "
        "too): train_flops_ratio is its training FLOPs per token with A_fgram over those without. "
        "params_active counts the inference-resident parameters (A_main + token embedding + head); "
        "params_total adds A_fgram; the f-gram table F is storage (fgram_table_bytes), not parameters."
    )
    return replace(section, note=f"{section.note} {caveat}".strip())


def _scaling_sections(runs: pd.DataFrame) -> list[_Section]:
    """The val-loss scaling fits (val-bpb when the runs mix tokenizers) against active and total params;
    one note instead of tables of empty rows when no curve could be fitted (e.g. one size per family)."""
    sections = []
    bpb = analysis.mixes_tokenizers(runs)  # losses per token in several units: fit bits per byte
    y, what = (names.EVAL_VAL_BPB, "val bpb") if bpb else (names.EVAL_VAL_LOSS, "val loss")
    for x in ("params_active", "params_total"):
        fits = lambda x=x: analysis.scaling_fits(runs, x=x, y=y)  # noqa: E731
        section = _try_table(f"Scaling fits: {what} vs {x}", fits, f"no train runs with {what}")
        if section.table is not None and section.table["b"].isna().all():
            why = "; ".join(dict.fromkeys(r for r in section.table["note"].dropna() if r)) or "too few sizes"
            section = _Section(section.title, note=f"no curve fitted ({why})")
        sections.append(section)
    if all(s.table is None for s in sections):
        why = "; ".join(dict.fromkeys(s.note for s in sections))
        return [_Section("Scaling fits", note=why, problem=any(s.problem for s in sections))]
    return sections


def _inference_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Seed-mean per-batch-size inference metrics, one row per config and batch size."""
    frames = []
    for key in names.PER_BATCH_SIZE:
        long = schema.per_batch_size(schema.finished(runs), key)
        if not long.empty:
            frames.append(long.assign(key=key))
    if not frames:
        return pd.DataFrame()
    long = pd.concat(frames)
    wide = long.pivot_table(
        index=["group", "family", "preset", "variant", "batch_size"],
        columns="key",
        values="value",
        aggfunc="mean",
        dropna=False,
        observed=True,
    )
    wide = wide.dropna(how="all").reset_index()
    wide.columns = [str(c).removeprefix("infer/") for c in wide.columns]
    return wide


_FIGURES: list[tuple[str, str, Callable[..., object]]] = [
    ("tokens_per_s_vs_sparsity", "Training tokens/s vs sparsity",
     lambda r, h, a: plots.tokens_per_s_vs_sparsity(r)),
    ("memory_breakdown", "Memory breakdown", lambda r, h, a: plots.memory_breakdown(r)),
    ("load_balance", "MoE expert load vs L3 rows per token",
     lambda r, h, a: plots.load_distributions(a.expert_tokens, a.l3_rows_per_token)),
    ("decode_tokens_per_s", "Decode tokens/s vs batch size",
     lambda r, h, a: plots.metric_vs_batch_size(r, names.INFER_DECODE_TOKENS_PER_S)),
    ("offload_decode_ratio", "Offloaded / on-device decode vs batch size",
     lambda r, h, a: plots.offload_decode_ratio(r)),
]  # fmt: skip


def _quality_figures(runs: pd.DataFrame) -> list[tuple[str, str, Callable[..., object]]]:
    """Chosen by what the suite varies: one model size gets a dot plot per config (seeds and their 95%
    intervals), several get log-log scaling plots; then the loss curves, every family on one axis."""
    metric, short = seeds.quality(runs)
    if quality_plots.n_sizes(runs) <= 1:
        out = [
            (
                "quality_per_config",
                f"{short.capitalize()} per config: seeds and 95% intervals",
                lambda r, h, a: quality_plots.quality_dots(r, metric),
            )
        ]
    else:
        out = [
            (
                f"quality_vs_{x}",
                f"{short.capitalize()} vs {x.replace('_', ' ')} (log-log)",
                lambda r, h, a, x=x: plots.val_loss_vs_params(r, x=x, y=metric),
            )
            for x in ("params_active", "params_total")
        ]
    curves = (
        "loss_curves",
        "Training loss, smoothed: every family on one axis, band over seeds",
        lambda r, h, a: quality_plots.loss_curves(h, r),
    )
    return [*out, curves]


def _figures(runs, history, arrays, fig_dir: Path) -> list[tuple[str, Path | None, str]]:
    """[(title, png path or None, note)] — each figure saved under fig_dir, or the reason it is missing."""
    out = []
    for name, title, make in [*_quality_figures(runs), *_FIGURES]:
        if name == "loss_curves" and history is None:
            out.append((title, None, "no metric history given"))
            continue
        try:
            fig = make(runs, history, arrays)
        except plots.NoData as err:
            out.append((title, None, str(err)))
            continue
        out.append((title, plots.save_png(fig, fig_dir / f"{name}.png"), ""))
    return out


def _header(runs: pd.DataFrame, title: str) -> tuple[str, str]:
    counts = runs["status"].fillna("unknown").value_counts().to_dict()
    status = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no runs"
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return title, f"{len(runs)} job runs ({status}); generated {stamp}"


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", title.lower()).strip("_")


def _write_tables(sections: list[_Section], table_dir: Path) -> dict[str, Path]:
    """{section title: CSV path} for every section with a table (the numbers unformatted, NA empty)."""
    out = {}
    for s in sections:
        if s.table is not None:
            table_dir.mkdir(parents=True, exist_ok=True)
            out[s.title] = table_dir / f"{_slug(s.title)}.csv"
            s.table.to_csv(out[s.title], index=False)
    return out


def build_report(
    runs: pd.DataFrame,
    history: pd.DataFrame | None = None,
    *,
    out_dir: str | Path,
    title: str | None = None,
    load_arrays: LoadArrays | None = None,
    figures: bool = True,
) -> ReportPaths:
    """Write report.html, report.md, figures/*.png and tables/*.csv under out_dir; returns their paths.

    The report opens with the verdict (the ordering the seeds support) and its narrow table, then the
    figures; the wide tables follow folded (HTML) or as links to their CSV files (Markdown).
    runs: `mlflow.search_runs` frame of the suite's runs (or a run table). history: long frame run_id, key,
    step, value (see `load.history_from_mlflow`), for the loss curves. figures=False: tables only (fast).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = as_run_table(runs)
    suite = table["suite"].dropna()
    title = title or f"isosparse report: {suite.iloc[0] if len(suite) else 'suite'}"
    sections = _sections(table)
    verdict = _verdict(table)
    drawn = _figures(table, history, load_arrays or LoadArrays(), out_dir / FIGURE_DIR) if figures else []
    csvs = _write_tables(sections, out_dir / TABLE_DIR)
    heading, subtitle = _header(table, title)
    html_path, md_path = out_dir / HTML_NAME, out_dir / MARKDOWN_NAME
    page = render_html(heading, subtitle, verdict, sections, drawn, csvs, out_dir)
    html_path.write_text(page, encoding="utf-8")
    md = render_markdown(heading, subtitle, verdict, sections, drawn, csvs, out_dir)
    md_path.write_text(md, encoding="utf-8")
    figs = tuple(p for _, p, _ in drawn if p is not None)
    return ReportPaths(html_path, md_path, figs, tuple(csvs.values()))

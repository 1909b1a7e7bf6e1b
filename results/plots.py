"""Figures of a suite: each function takes run-table (or history) frames and returns a matplotlib Figure.

Figures are built with `matplotlib.figure.Figure` directly (no pyplot, no global backend state; PNGs are
rendered by the Agg canvas). A function with nothing to draw raises `NoData`, so a report can skip it.
"""

import io
import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import ticker
from matplotlib.figure import Figure

from results import analysis, names, schema

# Mathtext tick labels (log axes) probe the STIX / Computer Modern families, which a bare machine lacks;
# matplotlib then warns once per family and falls back to DejaVu Sans, which is what we draw with anyway.
logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)

FAMILY_COLORS = {
    "dense": "#4c72b0",
    "l3": "#dd8452",
    "moe": "#55a868",
    "scone": "#c44e52",
    "hash_moe": "#937860",
}
OTHER_COLOR = "#8172b3"


class NoData(ValueError):
    """The frames hold nothing this figure could show."""


def _color(family: object) -> str:
    return FAMILY_COLORS.get(str(family), OTHER_COLOR)


def _label(row: Mapping) -> str:
    parts = [str(row.get(k)) for k in ("family", "preset", "variant") if not pd.isna(row.get(k))]
    return "/".join(parts) or str(row.get("run_id", "?"))


def _families(df: pd.DataFrame) -> list:
    fams = df["family"].dropna().unique().tolist()
    return sorted(fams, key=lambda f: schema.family_rank(pd.Series([f])).iloc[0])


def _same(values: pd.Series, value: object) -> pd.Series:
    """values == value, with NA equal to NA."""
    return values.isna() if pd.isna(value) else values.eq(value).fillna(False)


def params_label(value: float, _pos: object = None) -> str:
    """A parameter count as a short tick label: 6.52M, 33.8M, 1.2B, 950K."""
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:g}"


def _params_axis(ax) -> None:
    """Log x axis of parameter counts labelled 6.52M (matplotlib's 6.5×10⁶ minor labels overlap)."""
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(params_label))


def val_loss_vs_params(
    runs: pd.DataFrame, x: str = "params_active", y: str = names.EVAL_VAL_LOSS, kind: str = "train"
) -> Figure:
    """Seed-mean y (± std) against x per family and variant (colour = family, marker = variant) on
    log-log axes, with each curve's best available power-law fit (offset if fitted, else log-log). For
    several model sizes: one size's iso-active points differ by the matching error only (NoData)."""
    summary = analysis.seed_summary(runs[runs["kind"].eq(kind).fillna(False)], [y]).dropna(subset=[x, y])
    if summary.empty:
        raise NoData(f"no finished {kind} runs with {x} and {y}")
    if summary["preset"].nunique() < 2:
        raise NoData("one model size: see the per-config dot plot")
    fits = analysis.scaling_fits(runs, x=x, y=y, kind=kind).dropna(subset=["b"])
    fig = Figure(figsize=(6, 4.2), layout="constrained")
    ax = fig.subplots()
    variants = sorted(summary["variant"].dropna().unique().tolist())
    markers = dict(zip(variants, "osD^v<>ph*", strict=False))
    for family in _families(summary):
        for variant, pts in summary[summary["family"] == family].groupby("variant", dropna=False, sort=True):
            name = family if len(variants) <= 1 or pd.isna(variant) else f"{family}/{variant}"
            xs, ys = pts[x].to_numpy(float), pts[y].to_numpy(float)
            err = pts[f"{y}_std"].fillna(0).to_numpy(float)
            ax.errorbar(
                xs, ys, yerr=err, fmt=markers.get(variant, "o"), color=_color(family), label=name, capsize=3
            )
            fit = fits[(fits["family"] == family) & _same(fits["variant"], variant)]
            if not fit.empty:
                best = fit.sort_values("model", key=lambda m: m.eq("offset")).iloc[-1]  # offset if fitted
                grid = np.geomspace(xs.min(), xs.max(), 50)
                pred = best["a"] * grid ** (-best["b"]) + best["c"]
                label = f"{name} fit ({best['model']}): b={best['b']:.3f}, R²={best['r2']:.3f}"
                ax.plot(grid, pred, "--", color=_color(family), lw=1, label=label)
    _params_axis(ax)
    ax.set_yscale("log")  # a power law is a line
    ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%.2f"))
    ax.yaxis.set_minor_formatter(ticker.FormatStrFormatter("%.2f"))
    ax.set_xlabel(f"{x.replace('_', ' ')} (log)")
    ax.set_ylabel(f"{y} (log)")
    ax.grid(which="both", alpha=0.25)
    ax.legend(fontsize=7)
    return fig


def tokens_per_s_vs_sparsity(runs: pd.DataFrame, key: str = names.TRAIN_TOKENS_PER_S) -> Figure:
    """Seed-mean throughput (± std) against sparsity (total / active params), one colour per family."""
    summary = analysis.seed_summary(runs, [key]).dropna(subset=["sparsity", key])
    if summary.empty:
        raise NoData(f"no finished runs with sparsity and {key}")
    fig = Figure(figsize=(6, 4.2), layout="constrained")
    ax = fig.subplots()
    for family in _families(summary):
        pts = summary[summary["family"] == family]
        ax.errorbar(
            pts["sparsity"].to_numpy(float),
            pts[key].to_numpy(float),
            yerr=pts[f"{key}_std"].fillna(0).to_numpy(float),
            fmt="o",
            color=_color(family),
            label=family,
            capsize=3,
        )
    ax.set_xlabel("sparsity (total / active params)")
    ax.set_ylabel(key)
    ax.legend(fontsize=8)
    return fig


def memory_breakdown(runs: pd.DataFrame, kind: str = "train") -> Figure:
    """Stacked bars per config: parameter bytes by category and optimizer bytes; ◆ = peak device bytes."""
    parts = [names.params_bytes_key(c) for c in names.PARAM_CATEGORIES] + [names.MEM_OPTIMIZER_BYTES]
    parts = [p for p in parts if p in runs.columns]
    peak = names.MEM_PEAK_DEVICE_BYTES
    summary = analysis.seed_summary(runs[runs["kind"].eq(kind).fillna(False)], [*parts, peak])
    summary = summary[summary[[*parts, peak]].notna().any(axis=1)]
    if summary.empty:
        raise NoData(f"no finished {kind} runs with memory metrics")
    labels = [_label(r) + ("" if pd.isna(r["group"]) else f" [{r['group']}]") for _, r in summary.iterrows()]
    fig = Figure(figsize=(7, 0.9 + 0.45 * len(labels)), layout="constrained")
    ax = fig.subplots()
    y = np.arange(len(labels))
    left = np.zeros(len(labels))
    gib = 2.0**30
    for part in parts:
        width = summary[part].fillna(0).to_numpy(float) / gib
        if width.any():
            ax.barh(y, width, left=left, label=part.removeprefix("mem/"))
            left += width
    peaks = summary[peak].to_numpy(float, na_value=np.nan) / gib
    if np.isfinite(peaks).any():  # CPU runs have no device peak: no empty legend entry
        ax.plot(peaks, y, "kD", ms=5, label="peak device")
    ax.set_yticks(y, labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("GiB")
    ax.legend(fontsize=7, loc="best")
    return fig


def load_distributions(
    expert_tokens: Mapping[str, np.ndarray], l3_rows_per_token: Mapping[str, np.ndarray]
) -> Figure:
    """Left: MoE tokens per expert / mean over the layer's experts (1 = balanced); arrays (layers, experts).
    Right: L3 rows per token d_t (per token id, or per token occurrence if the arrays are weighted so)."""
    if not expert_tokens and not l3_rows_per_token:
        raise NoData("no expert-load or L3 rows-per-token arrays")
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    left, right = fig.subplots(1, 2)
    for label, counts in expert_tokens.items():
        counts = np.atleast_2d(np.asarray(counts, dtype=np.float64))  # (layers, experts)
        means = counts.mean(axis=-1, keepdims=True)
        if counts.size and (means > 0).all():
            left.hist((counts / means).ravel(), bins=30, alpha=0.6, label=label)
    left.axvline(1.0, color="k", lw=0.8, ls=":")
    left.set(title="MoE expert load", xlabel="tokens per expert / mean", ylabel="experts")
    for label, rows in l3_rows_per_token.items():
        rows = np.asarray(rows, dtype=np.float64).ravel()
        if rows.size:
            bins = np.unique(np.geomspace(1, rows.max() + 1, 30).round()) - 0.5  # integer-centred
            right.hist(rows, bins=bins, alpha=0.6, label=label)
    right.set(title="L3 rows per token", xlabel="rows per token", ylabel="tokens", xscale="log", yscale="log")
    for ax in (left, right):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    return fig


def metric_vs_batch_size(
    runs: pd.DataFrame, key: str, ylabel: str | None = None, suffix: Mapping[str, str] | None = None
) -> Figure:
    """One line per run of a per-batch-size metric ("<key>/bs<N>") against batch size (log2 x);
    suffix: {run_id: text appended to that run's legend label}."""
    long = schema.per_batch_size(schema.finished(runs), key)
    if long.empty:
        raise NoData(f"no finished runs with per-batch-size {key!r}")
    fig = Figure(figsize=(6, 4.2), layout="constrained")
    ax = fig.subplots()
    for _, line in long.groupby("run_id", sort=True):
        first = line.iloc[0]
        label = _label(first) + (suffix or {}).get(first["run_id"], "")
        ax.plot(
            line["batch_size"].to_numpy(float),
            line["value"].to_numpy(float),
            "o-",
            color=_color(first["family"]),
            label=label,
            lw=1.2,
        )
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size")
    ax.set_ylabel(ylabel or key)
    ax.legend(fontsize=7)
    return fig


CPU_OFFLOAD_NOTE = " (CPU: tables read in host memory, no device transfer)"


def offload_decode_ratio(runs: pd.DataFrame) -> Figure:
    """Decode tokens/s with L3 tables offloaded to host / on device, against batch size. A CPU run (hardware
    "cpu") has no device to offload from: its "offloaded" side reads the tables in host memory, and
    its line and the title say so."""
    cpu = (
        runs["hardware"].eq("cpu").fillna(False)
        if "hardware" in runs.columns
        else pd.Series(False, runs.index)
    )
    suffix = dict.fromkeys(runs.loc[cpu, "run_id"], CPU_OFFLOAD_NOTE)
    fig = metric_vs_batch_size(
        runs, names.INFER_OFFLOAD_DECODE_RATIO, "offloaded / on-device decode tokens/s", suffix
    )
    ax = fig.axes[0]
    ax.axhline(1.0, color="k", lw=0.8, ls=":")
    if suffix:
        ax.set_title("CPU runs: no device transfer (tables read in host memory)", fontsize=9)
    return fig


def png_bytes(fig: Figure, dpi: int = 100) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def save_png(fig: Figure, path: str | Path, dpi: int = 100) -> Path:
    """Write `fig` as a PNG (parent folders created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(fig, dpi))
    return path

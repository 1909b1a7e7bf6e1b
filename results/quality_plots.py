"""Quality figures chosen by what a suite varies: one model size → a dot plot per config with its seeds and
the 95% t interval of their mean (several sizes → `plots.val_loss_vs_params`, log-log); loss curves of
every family on one axis per size, smoothed (EMA), the band spanning the seeds. Matplotlib, no pyplot.
"""

import numpy as np
import pandas as pd
from matplotlib import ticker
from matplotlib.figure import Figure

from results import analysis, names, schema, seeds
from results.plots import NoData, _color

LINE_STYLES = ("-", "--", ":", "-.")  # configs of one family (ablation variants) share its colour
EMA_SPAN_FRACTION = 0.1  # loss curves: EMA span = this fraction of a run's logged points (at least 1)


def n_sizes(runs: pd.DataFrame, kind: str = "train") -> int:
    """How many model sizes the finished `kind` runs hold (distinct presets)."""
    fin = schema.finished(runs)
    return int(fin.loc[fin["kind"].eq(kind).fillna(False), "preset"].nunique())


def quality_dots(runs: pd.DataFrame, metric: str = names.EVAL_VAL_LOSS, kind: str = "train") -> Figure:
    """One row per config (sorted best first): each seed as a small dot, the mean as a large one with the
    95% t interval of the mean (`seeds.t_interval`); the dense mean as a dotted line. For a suite of
    one model size, where a params axis would spread a 1% matching error over the whole picture."""
    table = seeds.paired_table(runs, metric, kind)
    if table.empty:
        raise NoData(f"no finished {kind} runs with {metric}")
    fin = schema.finished(runs[runs["kind"].eq(kind).fillna(False)]).dropna(subset=[metric])
    config = analysis.config_key(fin, analysis.CONFIG_KEYS)
    table = table.sort_values("mean", ascending=False, kind="stable")  # best at the top
    fig = Figure(figsize=(6.4, 1.2 + 0.42 * len(table)), layout="constrained")
    ax = fig.subplots()
    for y, (_, row) in enumerate(table.iterrows()):
        values = fin.loc[config.eq(row["config"]).to_numpy(), metric].to_numpy(float)
        color = _color(row["family"])
        ax.plot(values, np.full(len(values), y), "o", ms=6, alpha=0.5, color=color, mec="white", mew=0.6)
        _, low, high = seeds.t_interval(values)
        if np.isfinite(low):
            ax.errorbar(
                row["mean"],
                y,
                xerr=[[row["mean"] - low], [high - row["mean"]]],
                fmt="none",
                ecolor=color,
                capsize=4,
                lw=1.5,
            )
        ax.plot(row["mean"], y, "D", ms=7, color=color)
    dense = table[table["family"].eq("dense").fillna(False)]
    for mean in dense["mean"]:
        ax.axvline(mean, color=_color("dense"), lw=0.8, ls=":")
    labels = table["label"] if table["preset"].nunique() <= 1 else table["preset"] + " " + table["label"]
    ax.set_yticks(np.arange(len(table)), labels)
    ax.set_ylim(-0.6, len(table) - 0.4)
    ax.set_xlabel(f"{metric} (lower is better)")
    ax.set_title("dots: seeds   ◆ mean   bar: 95% t interval of the mean", fontsize=9)
    ax.xaxis.set_major_locator(ticker.MaxNLocator(6))
    ax.grid(axis="x", alpha=0.3)
    return fig


def smooth(values: np.ndarray, span: float) -> np.ndarray:
    """Bias-corrected exponential moving average (pandas' ewm, adjust=True) with the given span."""
    return pd.Series(values, dtype=float).ewm(span=max(span, 1.0), adjust=True).mean().to_numpy()


def loss_curves(history: pd.DataFrame, runs: pd.DataFrame, key: str = names.TRAIN_LOSS) -> Figure:
    """Every family on one axis (one panel per model size): each config's seeds smoothed (EMA), the line
    their mean at each step, the band their min–max."""
    hist = history[history["key"].eq(key).fillna(False)]
    cols = ["run_id", "family", "preset", "variant", "seed"]
    hist = hist.merge(runs[cols], on="run_id", how="inner").dropna(subset=["value"])
    if hist.empty:
        raise NoData(f"no history of {key!r} for the given runs")
    presets = list(dict.fromkeys(hist["preset"].fillna("").tolist()))
    fig = Figure(figsize=(6.4 * min(len(presets), 2), 4.2 * -(-len(presets) // 2)), layout="constrained")
    axes = fig.subplots(-(-len(presets) // 2), min(len(presets), 2), squeeze=False).ravel()
    for ax, preset in zip(axes, presets, strict=False):
        sub = hist[hist["preset"].fillna("").eq(preset)]
        multi = sub.groupby("family")["variant"].transform("nunique") > 1
        seen: dict[str, int] = {}  # configs of a family drawn so far: the next gets the next line style
        for (family, variant), cfg in sub.groupby(["family", "variant"], dropna=False, sort=False):
            style = LINE_STYLES[seen.get(family, 0) % len(LINE_STYLES)]
            seen[family] = seen.get(family, 0) + 1
            curves = []
            for _, run in cfg.groupby("run_id", sort=True):
                run = run.sort_values("step")
                span = EMA_SPAN_FRACTION * len(run)
                curves.append(
                    pd.Series(smooth(run["value"].to_numpy(float), span), index=run["step"].to_numpy())
                )
            grid = pd.concat(curves, axis=1).sort_index().interpolate(limit_area="inside")
            steps = grid.index.to_numpy(float)
            name = seeds.DISPLAY.get(family, str(family))
            name += f" {variant}" if multi.loc[cfg.index].any() and not pd.isna(variant) else ""
            color = _color(family)
            ax.plot(
                steps,
                grid.mean(axis=1).to_numpy(float),
                color=color,
                lw=1.6,
                ls=style,
                label=f"{name} ({len(curves)} seed{'s' if len(curves) > 1 else ''})",
            )
            if len(curves) > 1:
                ax.fill_between(
                    steps,
                    grid.min(axis=1).to_numpy(float),
                    grid.max(axis=1).to_numpy(float),
                    color=color,
                    alpha=0.18,
                    lw=0,
                )
        _zoom(ax, fraction=0.3)
        ax.set_title(f"{preset}" if preset else "", fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylabel(f"{key} (EMA; band: min–max over seeds)")
        ax.grid(alpha=0.25)
        ax.legend(fontsize=8)
    for ax in axes[len(presets) :]:
        ax.set_visible(False)
    return fig


def _zoom(ax, fraction: float) -> None:
    """y limits from the lines after the first `fraction` of steps: the early drop would otherwise take the
    whole axis and flatten the differences between families at the end."""
    lows, highs = [], []
    for line in ax.get_lines():
        x, y = np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)
        late = y[x >= x.min() + fraction * (x.max() - x.min())] if len(x) else y
        late = late[np.isfinite(late)]
        if late.size:
            lows.append(late.min())
            highs.append(late.max())
    if lows:
        pad = 0.05 * (max(highs) - min(lows) or 1.0)
        ax.set_ylim(min(lows) - pad, max(highs) + pad)

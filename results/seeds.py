"""Seeds that say whether a difference is real: each config's mean ± sd over seeds, and its paired difference
(same seed) against its group's dense config with a two-sided Student-t interval (n − 1 dof, 95% default).
Details: docs/results.md#resultsseeds."""

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import special  # stdtrit: the t quantile without scipy.stats' 0.5-1 s import (compare's start-up)

from results import analysis, names, schema

LEVEL = 0.95
# How the verdict and the narrow tables name the families (the issue's and the papers' spelling).
DISPLAY = {"dense": "dense", "l3": "L3", "moe": "MoE", "scone": "SCONE", "hash_moe": "hash-MoE"}
COLUMNS = ["preset", "hardware", "group", "family", "variant", "label", "reference", "n_seeds", "mean", "std",
           "dense_group", "n_pairs", "diff_mean", "diff_std", "ci_low", "ci_high",
           "within_noise", "config"]  # fmt: skip


def t_interval(diffs: Sequence[float], level: float = LEVEL) -> tuple[float, float, float]:
    """(mean, low, high) of the two-sided `level` t interval of the mean of `diffs`; NaN bounds below 2
    values (one pair says nothing about the noise)."""
    d = np.asarray(diffs, dtype=np.float64)
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if d.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(d.mean())
    if d.size < 2:
        return mean, math.nan, math.nan
    half = float(special.stdtrit(d.size - 1, (1 + level) / 2)) * float(d.std(ddof=1)) / math.sqrt(d.size)
    return mean, mean - half, mean + half


def paired_table(
    runs: pd.DataFrame, metric: str = names.EVAL_VAL_LOSS, kind: str = "train", level: float = LEVEL
) -> pd.DataFrame:
    """One row per config of `kind` (COLUMNS): mean / std of `metric` over its seeds and, for every
    non-dense config, the paired difference config − dense over the seeds both ran (a seed run twice
    counts once, at its mean), with its `level` t interval. within_noise: the interval covers 0 (NA with
    fewer than 2 pairs). The reference is `reference_index`'s; `reference` is its label."""
    sub = runs[runs["kind"].eq(kind).fillna(False)]
    sub = sub[sub[metric].notna()] if metric in sub.columns else sub.iloc[:0]
    summary = analysis.seed_summary(sub, [metric])
    if summary.empty:
        return pd.DataFrame({c: pd.Series([], dtype="object") for c in COLUMNS})
    keys = list(analysis.CONFIG_KEYS)
    fin = schema.finished(sub)
    per_seed = fin.groupby([analysis.config_key(fin, keys), "seed"])[metric].mean()  # (config, seed)
    config = analysis.config_key(summary, keys)
    ref = reference_index(summary)
    rows = []
    for i, row in summary.iterrows():
        out = {k: row[k] for k in ("preset", "hardware", "group", "family", "variant", "n_seeds")}
        out["config"] = config.loc[i]  # analysis.config_key: matches the runs of this config
        out |= {
            "mean": row[metric],
            "std": row[f"{metric}_std"],
            "dense_group": pd.NA,
            "n_pairs": 0,
            "diff_mean": np.nan,
            "diff_std": np.nan,
            "ci_low": np.nan,
            "ci_high": np.nan,
            "within_noise": pd.NA,
        }
        j = ref.loc[i]
        if not pd.isna(j) and j != i:
            mine, dense = per_seed.loc[config.loc[i]], per_seed.loc[config.loc[j]]
            common = mine.index.intersection(dense.index)
            diffs = (mine.loc[common] - dense.loc[common]).to_numpy(np.float64)
            mean, low, high = t_interval(diffs, level)
            out |= {
                "dense_group": summary.loc[j, "group"],
                "n_pairs": len(diffs),
                "diff_mean": mean,
                "diff_std": float(np.std(diffs, ddof=1)) if len(diffs) > 1 else np.nan,
                "ci_low": low,
                "ci_high": high,
                "within_noise": bool(low <= 0 <= high) if len(diffs) > 1 else pd.NA,
            }
        rows.append(out)
    table = pd.DataFrame(rows)
    table.insert(5, "label", _labels(table))
    position = pd.Series(range(len(table)), index=summary.index)  # summary index → table row
    table.insert(6, "reference", [pd.NA if pd.isna(j) else table["label"].iloc[position[j]] for j in ref])
    table = table.astype({"n_seeds": "Int64", "n_pairs": "Int64", "within_noise": "boolean"})
    return table[COLUMNS]


def reference_index(summary: pd.DataFrame) -> pd.Series:
    """Per summary row: the config its differences are paired against. `analysis.dense_index`'s dense
    config; in a preset and hardware without any dense config (e.g. `suites/l3-optimizers.yaml`: AdamW vs
    row-wise), the first config there in the summary's (the suite's) order. NA when neither exists."""
    ref = analysis.dense_index(summary)
    cell = (
        summary["preset"].astype("string").fillna("") + "|" + summary["hardware"].astype("string").fillna("")
    )
    has_dense = summary["family"].eq("dense").fillna(False).groupby(cell).transform("any")
    first = pd.Series(summary.index, index=summary.index).groupby(cell).transform("first")
    return ref.where(ref.notna() | has_dense, first.astype("Int64"))


def _labels(table: pd.DataFrame) -> pd.Series:
    """'L3', or 'L3 cap1' where a preset holds several configs of one family (ablation variants)."""
    fam = table["family"].map(lambda f: DISPLAY.get(f, str(f)))
    several = table.groupby(["preset", "hardware", "family"], dropna=False)["family"].transform("size") > 1
    variant = table["variant"].astype("string").fillna("")
    return fam.where(~several | variant.eq(""), fam + " " + variant)


def verdict(table: pd.DataFrame) -> list[str]:
    """The ordering the seed means support, one line per preset and hardware (prefixed with its name when
    there are several): 'L3 < SCONE < dense < MoE (SCONE vs dense within noise)'. Configs are sorted by
    mean (lower is better); the parenthesis names every pair vs its reference (dense, else the first
    config) whose interval covers 0, or says that one seed gives no interval."""
    lines = []
    cells = list(table.groupby(["preset", "hardware"], dropna=False, sort=False))
    for (preset, hardware), cell in cells:
        cell = cell.dropna(subset=["mean"]).drop_duplicates("label").sort_values("mean", kind="stable")
        if cell.empty:
            continue
        text = " < ".join(cell["label"])
        noise = cell[cell["within_noise"].fillna(False)]
        notes = [f"{r['label']} vs {r['reference']} within noise" for _, r in noise.iterrows()]
        if len(cell) > 1 and cell["n_pairs"].max() < 2:
            notes.append(
                "1 seed: no intervals"
                if cell["n_seeds"].max() < 2
                else "fewer than 2 paired seeds: no intervals"
            )
        text += f" ({'; '.join(notes)})" if notes else ""
        where = " ".join(str(v) for v in (preset, hardware) if not pd.isna(v))
        lines.append(f"{where}: {text}" if len(cells) > 1 else text)
    return lines


def gain_kept(table: pd.DataFrame) -> list[str]:
    """What each control keeps of L3's gain over dense (the paired Δ of each config over the L3 reference's:
    the `base` variant's L3 when several L3 configs ran), one line per config, e.g. "L3 cap1 keeps 80% of
    L3's gain over dense". A control that keeps most of it explains the gain; none without an L3 gain."""
    lines = []
    for _, cell in table.groupby(["preset", "hardware"], dropna=False, sort=False):
        l3 = cell[cell["family"].eq("l3").fillna(False)]
        ref = l3[l3["variant"].eq("base").fillna(False)] if len(l3) > 1 else l3
        if ref.empty or not ref["diff_mean"].iloc[0] < 0:
            continue
        gain, ref_label = ref["diff_mean"].iloc[0], ref["label"].iloc[0]
        for _, r in cell[~cell.index.isin(ref.index) & cell["family"].ne("dense")].iterrows():
            if pd.isna(r["diff_mean"]):
                continue
            noise = " (its gap to dense is within noise)" if r["within_noise"] is True else ""
            if r["diff_mean"] >= 0:  # no better than dense: a negative share of a gain reads as nonsense
                kept, noise = "none", noise or " (it is worse than dense)"
            else:
                kept = f"{r['diff_mean'] / gain:.0%}"
            lines.append(f"{r['label']} keeps {kept} of {ref_label}'s gain over dense{noise}")
    return lines


def narrow(runs: pd.DataFrame, paired: pd.DataFrame, metric: str) -> pd.DataFrame:
    """`display` of `paired` (a `paired_table` of `metric`) with bits per byte beside a loss per token."""
    bpb = None if metric == names.EVAL_VAL_BPB else paired_table(runs, names.EVAL_VAL_BPB)
    return display(paired, "val bpb" if metric == names.EVAL_VAL_BPB else "val loss", bpb=bpb)


def quality(runs: pd.DataFrame, kind: str = "train") -> tuple[str, str]:
    """(metric, its short name) the verdict reads: bits per byte when the runs mix tokenizers (loss per
    token is then in different units), else the validation loss."""
    if analysis.quality_column(runs, kind) == "val_bpb":
        return names.EVAL_VAL_BPB, "val bpb"
    return names.EVAL_VAL_LOSS, "val loss"


def display(
    table: pd.DataFrame, metric_name: str = "val loss", digits: int = 3, bpb: pd.DataFrame | None = None
) -> pd.DataFrame:
    """The narrow table a person reads (strings): config (with its preset when there are several), seeds,
    mean ± sd, Δ vs dense and its 95% interval, and whether the gap is real or within noise. `bpb`, a
    `paired_table` of bits per byte, adds its seed mean as a "val bpb" column (mean only, to stay narrow)."""

    def num(v: float, signed: bool = False) -> str:
        return "—" if pd.isna(v) else f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"

    presets = table["preset"].nunique(dropna=False) > 1
    delta = _delta_header(table)
    show_bpb = bpb is not None and not bpb.empty and metric_name != "val bpb"
    bpb_mean = bpb.set_index("config")["mean"].to_dict() if show_bpb else {}
    rows = []
    for _, r in table.iterrows():
        sd = "" if pd.isna(r["std"]) else f" ± {r['std']:.{digits}f}"
        ci = "—" if pd.isna(r["ci_low"]) else f"[{num(r['ci_low'], True)}, {num(r['ci_high'], True)}]"
        gap = "" if pd.isna(r["within_noise"]) else ("within noise" if r["within_noise"] else "real")
        config = f"{r['preset']} {r['label']}" if presets else r["label"]
        rows.append(
            {
                "config": config,
                "seeds": int(r["n_seeds"]),
                metric_name: num(r["mean"]) + sd,
                delta: num(r["diff_mean"], True),
                "95% interval": ci,
                "gap": gap,
            }
            | ({"val bpb": num(bpb_mean.get(r["config"], np.nan))} if show_bpb else {})
        )
    extra = ["val bpb"] if show_bpb else []
    return pd.DataFrame(rows, columns=["config", "seeds", metric_name, *extra, delta, "95% interval", "gap"])


def _delta_header(table: pd.DataFrame) -> str:
    """ "Δ vs dense"; "Δ vs L3 adamw" when every pair's reference is that one non-dense config."""
    paired = table[table["n_pairs"].fillna(0).gt(0)]
    refs = set(paired["reference"].dropna())
    dense = set(table.loc[table["family"].eq("dense").fillna(False), "label"])
    if not refs or refs <= dense:
        return "Δ vs dense"
    return f"Δ vs {refs.pop()}" if len(refs) == 1 else "Δ vs reference"

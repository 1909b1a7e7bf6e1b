"""Iso-sparse analysis: pure run table (`results.schema`) → DataFrame functions.
Details: docs/results.md#resultsanalysis."""

from collections.abc import Sequence

import numpy as np
import pandas as pd

from results import names, schema
from results.fits import FitModel, fit_power_law

MATCH_TOLERANCE = 0.02
CONFIG_KEYS = (
    "group",
    "family",
    "preset",
    "kind",
    "hardware",
    "variant",
    "l3_allocation",
    "l3_cap",
    "l3_tied",
    "l3_positions",
    "moe_num_experts",
    "moe_top_k",
)
ACCOUNTING = ("params_active", "params_total", "sparsity")
# Short names of the seed-mean metrics shown in the tables.
SHORT = {
    names.EVAL_VAL_LOSS: "val_loss",
    names.EVAL_VAL_PPL: "val_ppl",
    names.EVAL_VAL_BPB: "val_bpb",
    names.DATA_VAL_BYTES_PER_TOKEN: "val_bytes_per_token",
    names.TRAIN_TOKENS_PER_S: "tokens_per_s",
    names.TRAIN_FLOOR_FRAC: "floor_frac",
    names.MEM_PEAK_DEVICE_BYTES: "peak_device_bytes",
    names.MEM_PEAK_HOST_BYTES: "peak_host_bytes",
    names.LB_EXPERT_MAX_OVER_MEAN: "expert_max_over_mean",
    names.LB_EXPERT_CV: "expert_cv",
    names.LB_DROPPED_TOKEN_FRAC: "dropped_token_frac",
    names.LB_L3_ROWS_PER_TOKEN_MEAN: "l3_rows_per_token_mean",
    names.LB_L3_ROWS_PER_TOKEN_MAX: "l3_rows_per_token_max",
    names.LB_L3_BYTES_PER_TOKEN: "l3_bytes_per_token",
    names.LB_SCONE_MATCH_RATE: "scone_match_rate",
    names.MEM_FGRAM_TABLE_BYTES: "fgram_table_bytes",
    names.TRAIN_FLOPS_PER_TOKEN: "train_flops_per_token",
    names.TRAIN_FLOPS_PER_TOKEN_MAIN: "train_flops_per_token_main",
}
EXPERT_FAMILIES = ("moe", "hash_moe")  # matched iso-total with the group's L3 model
ABLATION_AXES = ("l3_allocation", "l3_cap", "l3_tied", "l3_positions")
# The paper's recipe is the reference of each ablation; placement has none (first in sorted order).
ABLATION_REFERENCE: dict[str, object] = {"l3_allocation": "lzw", "l3_cap": 512, "l3_tied": False}


def seed_summary(runs: pd.DataFrame, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per config: CONFIG_KEYS, n_seeds, accounting, match_error (largest magnitude), and per metric
    its mean (column named as the metric) and std (`<metric>_std`, NA below 2 runs)."""
    fin = schema.finished(runs)
    metrics = list(schema.metric_columns(runs) if metrics is None else metrics)
    keys = list(CONFIG_KEYS)
    if fin.empty:
        cols = [*keys, "n_seeds", *ACCOUNTING, "match_error", *metrics, *(f"{m}_std" for m in metrics)]
        return schema.empty().reindex(columns=cols).astype({"n_seeds": "Int64"})
    grouped = fin.groupby(keys, dropna=False, sort=False)
    out = grouped[list(ACCOUNTING)].first()
    out.insert(0, "n_seeds", grouped.size().astype("Int64"))
    out["match_error"] = grouped["match_error"].agg(lambda e: schema.match_error(*e)).astype("Float64")
    means = grouped[metrics].mean().astype("Float64")
    stds = grouped[metrics].std(ddof=1).astype("Float64").add_suffix("_std")
    out = pd.concat([out, means, stds], axis=1).reset_index()
    size = out.groupby(["group", "hardware"], dropna=False)["params_active"].transform("min")
    order = out.assign(_rank=schema.family_rank(out["family"]), _size=size)
    order = order.sort_values(
        ["_size", "group", "hardware", "_rank", "preset", "variant"], na_position="first"
    )
    return out.loc[order.index].reset_index(drop=True)


def flag_match(
    table: pd.DataFrame, tolerance: float = MATCH_TOLERANCE, columns: Sequence[str] = ()
) -> pd.Series:
    """True where any of the error columns (signed fractions) exceeds `tolerance` in magnitude; NA counts as
    not exceeding."""
    if tolerance <= 0:
        raise ValueError(f"tolerance must be > 0, got {tolerance}")
    flag = pd.Series(False, index=table.index, dtype="boolean")
    for col in columns:
        flag |= table[col].astype("Float64").abs().gt(tolerance).fillna(False)
    return flag


def _short(summary: pd.DataFrame) -> pd.DataFrame:
    cols = dict(SHORT) | {f"{m}_std": f"{s}_std" for m, s in SHORT.items()}
    return summary.rename(columns=cols)


def iso_sparse_table(
    runs: pd.DataFrame, kind: str = "train", tolerance: float = MATCH_TOLERANCE
) -> pd.DataFrame:
    """Every config of `kind` against the dense config of its group (and hardware): equal active params.

    A group without a dense config (the orchestrator runs a dense job once when variants leave it
    unchanged) uses the only dense config of the same preset and hardware, if there is exactly one;
    `dense_group` names the group the reference came from.
    delta_* = config − dense (absolute); *_ratio = config / dense; active_error = params_active / dense − 1.
    active_error is measured; planned_match_error is the suite's plan (see the module doc).
    match_flag: |planned_match_error| or |active_error| > tolerance. Without a dense reference the deltas
    are NA.
    Raises ValueError when a group has several dense configs (the reference would be ambiguous).
    """
    summary = _short(seed_summary(runs[runs["kind"].eq(kind).fillna(False)], _metrics(runs)))
    table = summary.join(_dense_reference(summary))
    table["delta_val_loss"] = table["val_loss"] - table["val_loss_dense"]
    table["delta_val_ppl"] = table["val_ppl"] - table["val_ppl_dense"]
    table["delta_val_bpb"] = table["val_bpb"] - table["val_bpb_dense"]
    table["tokens_per_s_ratio"] = table["tokens_per_s"] / table["tokens_per_s_dense"]
    table["peak_device_ratio"] = table["peak_device_bytes"] / table["peak_device_bytes_dense"]
    table["active_error"] = (
        table["params_active"].astype("Float64") / table["params_active_dense"].astype("Float64") - 1
    )
    table["match_flag"] = flag_match(table, tolerance, ["match_error", "active_error"])
    cols = [
        "group", "hardware", "family", "preset", "variant", "n_seeds", *ACCOUNTING, "dense_group",
        "val_loss", "val_loss_std", "dropped_token_frac", "val_ppl", "val_ppl_std", "delta_val_loss",
        "delta_val_ppl", "val_bpb", "val_bpb_std", "delta_val_bpb", "tokens_per_s", "tokens_per_s_std",
        "tokens_per_s_ratio", "floor_frac", "peak_device_bytes", "peak_host_bytes",
        "peak_device_ratio", "expert_max_over_mean", "expert_cv",
        "l3_rows_per_token_mean", "l3_rows_per_token_max", "l3_bytes_per_token",
        "active_error", "match_error", "match_flag",
    ]  # fmt: skip
    return table[cols].rename(columns={"match_error": "planned_match_error"}).reset_index(drop=True)


def dense_index(summary: pd.DataFrame) -> pd.Series:
    """Per summary row: the index of its reference dense config (the dense config of its group and
    hardware, else the only dense config of its preset and hardware), NA when there is none.
    Raises ValueError when a group has several dense configs (the reference would be ambiguous)."""
    dense = summary[summary["family"].eq("dense").fillna(False)]
    cell, dense_cell = _key(summary, "group", "hardware"), _key(dense, "group", "hardware")
    dup = dense_cell.duplicated(keep=False)
    if dup.any():
        bad = sorted(set(dense.loc[dup, "group"].fillna("<no group>")))
        raise ValueError(f"groups {bad} have several dense configs; give each its own group tag")
    ref = pd.Series(dense.index, index=dense_cell, dtype="Int64").reindex(cell).set_axis(summary.index)
    preset, dense_preset = _key(summary, "preset", "hardware"), _key(dense, "preset", "hardware")
    unique = ~dense_preset.duplicated(keep=False)
    fallback = pd.Series(dense.index[unique.to_numpy()], index=dense_preset[unique], dtype="Int64")
    missing = ~cell.isin(set(dense_cell))
    ref.loc[missing] = fallback.reindex(preset[missing]).to_numpy()
    return ref


def _dense_reference(summary: pd.DataFrame) -> pd.DataFrame:
    """Per summary row: the reference dense config's values (suffixed _dense) and its `dense_group`."""
    cols = ["params_active", "val_loss", "val_ppl", "val_bpb", "tokens_per_s", "peak_device_bytes", "group"]
    ref = dense_index(summary)
    rows = summary[cols].set_axis(summary.index.map(str))  # string labels: NA (no reference) matches none
    values = rows.reindex(["" if pd.isna(j) else str(j) for j in ref]).set_axis(summary.index)
    return values.rename(columns={"group": "dense_group"}).rename(
        columns=lambda c: c if c == "dense_group" else f"{c}_dense"
    )


def config_key(df: pd.DataFrame, cols) -> pd.Series:
    """A join key over `cols` that also matches missing values."""
    return _key(df, *cols)


def _key(df: pd.DataFrame, *cols: str) -> pd.Series:
    """A join key over `cols` that also matches missing values."""
    return pd.Series(
        [
            "\x1f".join("\0" if pd.isna(v) else str(v) for v in row)
            for row in df[list(cols)].itertuples(index=False)
        ],
        index=df.index,
        dtype="object",
    )


def mixes_tokenizers(runs: pd.DataFrame, kind: str = "train") -> bool:
    """True when the finished `kind` runs measured their validation loss in more than one unit: their
    data/val_bytes_per_token (validation text bytes over tokens) differ, i.e. their tokenizers (or texts)
    do. Loss per token then does not compare across rows; bits per byte does."""
    fin = schema.finished(runs)
    if fin.empty or names.DATA_VAL_BYTES_PER_TOKEN not in fin.columns:
        return False
    ratios = fin.loc[fin["kind"].eq(kind).fillna(False), names.DATA_VAL_BYTES_PER_TOKEN].dropna()
    return ratios.nunique() > 1


def quality_column(runs: pd.DataFrame, kind: str = "train") -> str:
    """The quality a table leads with: "val_bpb" when its runs mix tokenizers, else "val_loss"."""
    return "val_bpb" if mixes_tokenizers(runs, kind) else "val_loss"


def _metrics(runs: pd.DataFrame) -> list[str]:
    return [m for m in SHORT if m in runs.columns]


def l3_vs_moe_table(
    runs: pd.DataFrame, kind: str = "train", tolerance: float = MATCH_TOLERANCE
) -> pd.DataFrame:
    """Each L3 config against each MoE / hash-MoE config (`family`) of its group (and hardware): equal total
    params.

    total_error / active_error = MoE / L3 − 1, measured (the MoE's error against the L3 model it was
    matched to: the direction of match/total_rel_err and of `isosparse compare`'s total_err);
    delta_val_loss = L3 − MoE; *_ratio = L3 / MoE.
    match_flag: |total_error|, |active_error| or either side's planned |match_error| > tolerance.
    """
    summary = _short(seed_summary(runs[runs["kind"].eq(kind).fillna(False)], _metrics(runs)))
    summary["_cell"] = _key(summary, "group", "hardware")
    side = ["_cell", "group", "hardware", "preset", "variant", "n_seeds", "params_active", "params_total"]
    side += ["val_loss", "val_ppl", "tokens_per_s", "peak_device_bytes", "match_error"]
    l3 = summary.loc[summary["family"].eq("l3").fillna(False), side]
    experts = summary["family"].isin(EXPERT_FAMILIES).fillna(False)  # the MoE and the hash-routed MoE
    moe = summary.loc[experts, [*side, "family", "moe_num_experts", "moe_top_k"]]
    pair = l3.merge(moe.drop(columns=["group", "hardware"]), on="_cell", suffixes=("_l3", "_moe"))
    for n in ("params_total", "params_active"):
        err = pair[f"{n}_moe"].astype("Float64") / pair[f"{n}_l3"].astype("Float64") - 1
        pair[n.replace("params", "").strip("_") + "_error"] = err
    pair["delta_val_loss"] = pair["val_loss_l3"] - pair["val_loss_moe"]
    pair["delta_val_ppl"] = pair["val_ppl_l3"] - pair["val_ppl_moe"]
    pair["tokens_per_s_ratio"] = pair["tokens_per_s_l3"] / pair["tokens_per_s_moe"]
    pair["peak_device_ratio"] = pair["peak_device_bytes_l3"] / pair["peak_device_bytes_moe"]
    errors = ["total_error", "active_error", "match_error_l3", "match_error_moe"]
    pair["match_flag"] = flag_match(pair, tolerance, errors)
    cols = [
        "group", "hardware", "variant_l3", "family", "variant_moe", "moe_num_experts", "moe_top_k",
        "params_total_l3", "params_total_moe", "total_error", "params_active_l3", "params_active_moe",
        "active_error", "val_loss_l3", "val_loss_moe", "delta_val_loss", "val_ppl_l3", "val_ppl_moe",
        "delta_val_ppl", "tokens_per_s_ratio", "peak_device_ratio", "match_flag",
    ]  # fmt: skip
    return pair[cols].reset_index(drop=True)


def scaling_fits(
    runs: pd.DataFrame,
    x: str = "params_active",
    y: str = names.EVAL_VAL_LOSS,
    models: Sequence[FitModel] = ("loglog", "offset"),
    kind: str = "train",
) -> pd.DataFrame:
    """Per family, variant and model (see `results.fits`): y = a·x^(−b) [+ c] over the configs' seed means.

    Each variant (the suite's baseline, or an ablation) is its own curve. Columns: family, variant, x, y,
    model, n_points, a, b, c, r2, note. A curve with too few distinct sizes gets a row with NA coefficients
    and the reason in `note`, so a missing fit is visible rather than absent.
    """
    if x not in ("params_active", "params_total"):
        raise ValueError(f"x must be 'params_active' or 'params_total', got {x!r}")
    summary = seed_summary(runs[runs["kind"].eq(kind).fillna(False)], [y])
    points = summary[summary["family"].notna()].dropna(subset=[x, y])
    points = points.assign(_rank=schema.family_rank(points["family"])).sort_values(["_rank", "variant"])
    rows = []
    for (family, variant), pts in points.groupby(["family", "variant"], dropna=False, sort=False):
        for model in models:
            row = {"family": family, "variant": variant, "x": x, "y": y, "model": model, "n_points": len(pts)}
            try:
                fit = fit_power_law(pts[x].to_numpy(float), pts[y].to_numpy(float), model)
            except ValueError as err:
                rows.append(row | {"a": np.nan, "b": np.nan, "c": np.nan, "r2": np.nan, "note": str(err)})
                continue
            rows.append(row | {"a": fit.a, "b": fit.b, "c": fit.c, "r2": fit.r2, "note": ""})
    cols = ["family", "variant", "x", "y", "model", "n_points", "a", "b", "c", "r2", "note"]
    out = pd.DataFrame(rows, columns=cols)
    return out.astype({"n_points": "Int64", "a": "Float64", "b": "Float64", "c": "Float64", "r2": "Float64"})


def ablation_table(
    runs: pd.DataFrame, axis: str, kind: str = "train", reference: object | None = None
) -> pd.DataFrame:
    """L3 configs that differ only in `axis` (one of ABLATION_AXES), each against the reference setting of
    its context: delta_val_loss = value − reference, tokens_per_s_ratio = value / reference. The `variant`
    and `group` labels are ignored (the orchestrator names groups after variants); preset, hardware and
    the other axes must agree. Contexts where `axis` takes a single value are left out."""
    if axis not in ABLATION_AXES:
        raise ValueError(f"axis must be one of {ABLATION_AXES}, got {axis!r}")
    l3 = runs[runs["family"].eq("l3").fillna(False) & runs["kind"].eq(kind).fillna(False)]
    summary = _short(seed_summary(l3, _metrics(runs)))
    context = [k for k in CONFIG_KEYS if k not in (axis, "variant", "group")]
    cols = ["group", "hardware", "preset", axis, "variant", "reference", "n_seeds", "params_total",
            "val_loss", "val_loss_std", "val_ppl", "delta_val_loss", "tokens_per_s", "tokens_per_s_ratio",
            "l3_rows_per_token_mean", "l3_bytes_per_token", "peak_device_bytes"]  # fmt: skip
    parts = []
    for _, ctx in summary.groupby(context, dropna=False, sort=False):
        values = sorted(set(ctx[axis].dropna()), key=str)
        if len(values) < 2:
            continue
        ref = reference if reference is not None else ABLATION_REFERENCE.get(axis)
        ref = ref if ref in values else values[0]
        base = ctx[ctx[axis].eq(ref).fillna(False)].iloc[0]
        part = ctx.assign(reference=str(ref))
        part["delta_val_loss"] = part["val_loss"] - base["val_loss"]
        part["tokens_per_s_ratio"] = part["tokens_per_s"] / base["tokens_per_s"]
        parts.append(part.sort_values(axis, key=lambda s: s.map(str)))
    if not parts:
        return pd.DataFrame({c: pd.Series([], dtype="object") for c in cols})
    return pd.concat(parts)[cols].reset_index(drop=True)


def ablation_tables(runs: pd.DataFrame, kind: str = "train") -> dict[str, pd.DataFrame]:
    """{axis: ablation_table} for the axes that vary anywhere in `runs`."""
    tables = {axis: ablation_table(runs, axis, kind) for axis in ABLATION_AXES}
    return {axis: t for axis, t in tables.items() if not t.empty}


def scone_table(runs: pd.DataFrame, tolerance: float = MATCH_TOLERANCE) -> pd.DataFrame:
    """Each SCONE train config against the dense config of its group (L3_SPEC §6, as the paper counts).

    params_active is SCONE's inference-resident count (A_main + token embedding + head), matched to dense's
    active (inference_error = params_active / dense − 1); params_total adds A_fgram, a training-time
    parameter. train_flops_ratio = train FLOPs per token with A_fgram / without it: the extra training
    compute SCONE spends over its inference-matched baseline. fgram_table_bytes: F, storage only.
    """
    summary = _short(seed_summary(runs[runs["kind"].eq("train").fillna(False)], _metrics(runs)))
    table = summary.join(_dense_reference(summary))
    table = table[table["family"].eq("scone").fillna(False)].copy()
    table["delta_val_loss"] = table["val_loss"] - table["val_loss_dense"]
    table["train_flops_ratio"] = table["train_flops_per_token"] / table["train_flops_per_token_main"]
    table["inference_error"] = (
        table["params_active"].astype("Float64") / table["params_active_dense"].astype("Float64") - 1
    )
    table["match_flag"] = flag_match(table, tolerance, ["match_error", "inference_error"])
    cols = [
        "group", "hardware", "preset", "variant", "n_seeds", "params_active", "params_total",
        "val_loss", "val_loss_dense", "delta_val_loss", "train_flops_per_token", "train_flops_ratio",
        "scone_match_rate", "fgram_table_bytes", "tokens_per_s", "inference_error", "match_flag",
    ]  # fmt: skip
    return table[cols].reset_index(drop=True)


def downstream_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per config of the finished eval runs (lm-evaluation-harness): the seed mean of every
    lm_eval/<task>/<metric>, named "<task>/<metric>" ("<task>/acc_stderr": the mean of the runs' own
    standard errors). Empty without eval runs."""
    evals = runs[runs["kind"].eq("eval").fillna(False)]
    metrics = [c for c in runs.columns if c.startswith(names.LM_EVAL_PREFIX)]
    metrics.sort(key=lambda c: (c.removesuffix("_stderr"), c.endswith("_stderr")))  # each value, its error
    if not metrics or schema.finished(evals).empty:
        return pd.DataFrame()
    summary = seed_summary(evals, metrics)
    cols = ["group", "family", "preset", "variant", "n_seeds", *metrics]
    return summary[cols].rename(columns=lambda c: c.removeprefix(names.LM_EVAL_PREFIX))

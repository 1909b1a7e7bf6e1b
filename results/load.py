"""`mlflow.search_runs` DataFrame → run table (`results.schema`), and metric histories to long form.

The input has columns "run_id", "status", "start_time", "params.<dotted>", "metrics.<key>", "tags.<name>"
(MLflow's layout); which tags/params are read is fixed in `results.names`. No mlflow import: the
orchestrator queries MLflow and hands the frames over.
"""

from collections.abc import Iterable, Mapping

import pandas as pd

from results import names, schema

_TAGS = {
    "suite": names.TAG_SUITE,
    "parent_run_id": names.TAG_PARENT_RUN,
    "outcome": names.TAG_OUTCOME,
    "family": names.TAG_FAMILY,
    "preset": names.TAG_PRESET,
    "group": names.TAG_GROUP,
    "seed": names.TAG_SEED,
    "kind": names.TAG_KIND,
    "hardware": names.TAG_HARDWARE,
    "fingerprint": names.TAG_FINGERPRINT,
    "variant": names.TAG_VARIANT,
    "match_error": names.TAG_MATCH_ERROR,
}
_ACCOUNTING = {
    "params_active": names.PARAMS_ACTIVE,
    "params_total": names.PARAMS_TOTAL,
    "sparsity": names.SPARSITY,
}
_CONFIG_PARAMS = {
    "l3_allocation": names.PARAM_L3_ALLOCATION,
    "l3_cap": names.PARAM_L3_CAP,
    "l3_tied": names.PARAM_L3_TIED,
    "l3_positions": names.PARAM_L3_POSITIONS,
    "moe_num_experts": names.PARAM_MOE_NUM_EXPERTS,
    "moe_top_k": names.PARAM_MOE_TOP_K,
}


def runs_from_mlflow(raw: pd.DataFrame) -> pd.DataFrame:
    """One schema row per MLflow run. A frame without rows (MLflow returns one without columns) → empty table.

    Runs that are not jobs (the suite's parent run: no "isosparse.kind" tag while other runs have one) are
    dropped, so the parent run never shows up as a job.
    """
    if len(raw) == 0:
        return schema.empty()
    if "run_id" not in raw.columns:
        raise ValueError(
            f"expected an mlflow.search_runs frame with a 'run_id' column, got {list(raw.columns)}"
        )
    kind_col = f"tags.{names.TAG_KIND}"
    if kind_col in raw.columns and raw[kind_col].notna().any():
        raw = raw[raw[kind_col].notna()]
    out: dict[str, pd.Series] = {"run_id": raw["run_id"]}
    for col in ("status", "start_time"):
        if col in raw.columns:
            out[col] = raw[col]
    for col, tag in _TAGS.items():
        if f"tags.{tag}" in raw.columns:
            out[col] = raw[f"tags.{tag}"]
    for col, key in _ACCOUNTING.items():
        found = _first_present(raw, [f"metrics.{key}", f"params.{key}", f"tags.{names.TAG_PREFIX}{key}"])
        if found is not None:
            out[col] = found
    for col, param in _CONFIG_PARAMS.items():
        found = _param(raw, param)
        if found is not None:
            out[col] = found
    for col in raw.columns:
        if col.startswith("metrics.") and col[len("metrics.") :] not in _ACCOUNTING.values():
            out[col[len("metrics.") :]] = raw[col]
    return schema.coerce(pd.DataFrame(out, index=raw.index))


def _first_present(raw: pd.DataFrame, candidates: Iterable[str]) -> pd.Series | None:
    """Row-wise first non-NA value among the candidate columns that exist (None if none exists)."""
    found = None
    for col in candidates:
        if col in raw.columns:
            series = pd.to_numeric(raw[col], errors="coerce")
            found = series if found is None else found.fillna(series)
    return found


def _param(raw: pd.DataFrame, dotted: str) -> pd.Series | None:
    """ "params.<dotted>"; else the params columns ending in "." + its last two parts (e.g. ".l3.cap"),
    shallowest path first, each filling the rows the previous ones left empty."""
    if f"params.{dotted}" in raw.columns:
        return raw[f"params.{dotted}"]
    suffix = "." + ".".join(dotted.split(".")[-2:])
    hits = sorted((c for c in raw.columns if c.startswith("params.") and c.endswith(suffix)),
                  key=lambda c: (c.count("."), c))  # fmt: skip
    found = None
    for col in hits:
        found = raw[col] if found is None else found.fillna(raw[col])
    return found


def history_from_mlflow(histories: Mapping[str, Mapping[str, Iterable[tuple[int, float]]]]) -> pd.DataFrame:
    """{run_id: {key: [(step, value), ...]}} → long frame run_id, key, step, value (what plots expect).

    The orchestrator builds the mapping from `MlflowClient.get_metric_history` (Metric.step, Metric.value).
    """
    rows = [
        (run_id, key, int(step), float(value))
        for run_id, by_key in histories.items()
        for key, points in by_key.items()
        for step, value in points
    ]
    frame = pd.DataFrame(rows, columns=["run_id", "key", "step", "value"])
    return frame.astype({"run_id": "string", "key": "string", "step": "Int64", "value": "Float64"})

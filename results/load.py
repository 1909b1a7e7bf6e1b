"""`mlflow.search_runs` DataFrame → run table (`results.schema`), and metric histories to long form.
Details: docs/results.md#resultsload."""

from collections.abc import Iterable, Mapping

import pandas as pd

from results import names, schema

# column -> tags tried in order (the first present non-NA value wins per row)
_TAGS = {
    "suite": (names.TAG_SUITE,),
    "parent_run_id": (names.TAG_PARENT_RUN,),
    "outcome": (names.TAG_OUTCOME,),
    "error": (names.TAG_ERROR,),
    "family": (names.TAG_FAMILY,),
    "preset": (names.TAG_PRESET,),
    "group": (names.TAG_GROUP,),
    "seed": (names.TAG_SEED,),
    "kind": (names.TAG_JOB_KIND,),
    "hardware": (names.TAG_HARDWARE, names.TAG_INFO_HARDWARE),
    "fingerprint": (names.TAG_FINGERPRINT,),
    "variant": (names.TAG_VARIANT,),
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
    """One schema row per job run. A frame without rows (MLflow returns one without columns) → empty table.

    Runs tagged isosparse.kind other than "job" (the suite's parent run) are dropped; a job's suite name
    comes from its own tag or its parent run's. See `results.names` for every name read here.
    """
    if len(raw) == 0:
        return schema.empty()
    if "run_id" not in raw.columns:
        raise ValueError(
            f"expected an mlflow.search_runs frame with a 'run_id' column, got {list(raw.columns)}"
        )
    jobs = _jobs(raw)
    out: dict[str, pd.Series] = {"run_id": jobs["run_id"]}
    for col in ("status", "start_time"):
        if col in jobs.columns:
            out[col] = jobs[col]
    for col, tags in _TAGS.items():
        found = _first_present(jobs, [names.tag_column(t) for t in tags], numeric=False)
        if found is not None:
            out[col] = found
    out["suite"] = _suite(raw, jobs, out.get("suite"))
    if "group" in out and "seed" in out:
        out["group"] = _strip_seed(out["group"], out["seed"])
    out["match_error"] = _match_error(jobs)
    for col, key in _ACCOUNTING.items():
        found = _first_present(
            jobs, [names.metric_column(key), names.param_column(key), names.tag_column(names.label_tag(key))]
        )
        if found is not None:
            out[col] = found
    for col, param in _CONFIG_PARAMS.items():
        if names.param_column(param) in jobs.columns:
            out[col] = jobs[names.param_column(param)]
    for col in jobs.columns:
        key = col.removeprefix(names.metric_column(""))
        if key != col and key not in _ACCOUNTING.values():
            out[key] = jobs[col]
    return schema.coerce(pd.DataFrame(out, index=jobs.index))


def _jobs(raw: pd.DataFrame) -> pd.DataFrame:
    col = names.tag_column(names.TAG_RUN_TYPE)
    return raw[raw[col].eq(names.RUN_TYPE_JOB).fillna(False)] if col in raw.columns else raw


def _suite(raw: pd.DataFrame, jobs: pd.DataFrame, own: pd.Series | None) -> pd.Series:
    """The job's own suite tag, else the suite tag of its parent run (if that run is in `raw`)."""
    suite = own if own is not None else pd.Series(pd.NA, index=jobs.index, dtype="object")
    tag, parent = names.tag_column(names.TAG_SUITE), names.tag_column(names.TAG_PARENT_RUN)
    if tag in raw.columns and parent in jobs.columns:
        by_run = raw.set_index("run_id")[tag].dropna()
        suite = suite.fillna(jobs[parent].map(by_run))
    return suite


def _strip_seed(group: pd.Series, seed: pd.Series) -> pd.Series:
    """ "tiny/base/s0" with seed "0" -> "tiny/base": the group shared by the seeds of one config."""

    def strip(g: object, s: object) -> object:
        tail = f"/s{s}"
        return g[: -len(tail)] if isinstance(g, str) and isinstance(s, str) and g.endswith(tail) else g

    return pd.Series(
        [strip(g, s) for g, s in zip(group, seed, strict=True)], index=group.index, dtype="object"
    )


def _match_error(jobs: pd.DataFrame) -> pd.Series:
    """The match-error tag, else `schema.match_error` of the match/*_rel_err metrics (NA when none)."""
    keys = [names.metric_column(k) for k in (names.MATCH_ACTIVE_REL_ERR, names.MATCH_TOTAL_REL_ERR)]
    errors = [pd.to_numeric(jobs[k], errors="coerce") for k in keys if k in jobs.columns]
    metric = pd.Series(
        [schema.match_error(*row) for row in zip(*errors, strict=True)] if errors else None,
        index=jobs.index,
        dtype="Float64",
    )
    tag = _first_present(jobs, [names.tag_column(names.TAG_MATCH_ERROR)])
    return metric if tag is None else tag.astype("Float64").fillna(metric)


def _first_present(raw: pd.DataFrame, candidates: Iterable[str], numeric: bool = True) -> pd.Series | None:
    """Row-wise first non-NA value among the candidate columns that exist (None if none exists)."""
    found = None
    for col in candidates:
        if col in raw.columns:
            series = pd.to_numeric(raw[col], errors="coerce") if numeric else raw[col]
            found = series if found is None else found.fillna(series)
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

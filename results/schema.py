"""The run table: one row per job run with typed (nullable) columns, every DESIGN.md metric always present.
Details: docs/results.md#resultsschema."""

import re

import pandas as pd

from results import names

# name -> pandas dtype. Strings use the nullable "string" dtype (NA, not None/NaN).
IDENTITY: dict[str, str] = {
    "run_id": "string",
    "suite": "string",
    "parent_run_id": "string",
    "status": "string",  # MLflow status: FINISHED | FAILED | KILLED | RUNNING | SCHEDULED
    "outcome": "string",  # failure class, names.OUTCOMES
    "error": "string",  # one-line error of a run that did not finish
    "start_time": "datetime64[ns, UTC]",
    "family": "string",
    "preset": "string",
    "group": "string",
    "seed": "Int64",
    "kind": "string",
    "hardware": "string",
    "fingerprint": "string",
    "variant": "string",
    "match_error": "Float64",  # signed fraction
    "params_active": "Int64",
    "params_total": "Int64",
    "sparsity": "Float64",  # params_total / params_active
    "l3_allocation": "string",
    "l3_cap": "Int64",
    "l3_tied": "boolean",
    "l3_positions": "string",  # normalized "6,12"
    "moe_num_experts": "Int64",
    "moe_top_k": "Int64",
}
METRIC_DTYPE = "Float64"
FAMILY_ORDER = ("dense", "l3", "moe", "hash_moe", "scone")
_BS_RE = re.compile(re.escape(names.BATCH_SUFFIX) + r"(\d+)$")


def match_error(*errors):
    """The match rule, once (L3_SPEC §5): the largest-magnitude of the relative errors given (a job's
    active vs its group's dense and total vs its L3; a config's over seeds). None/NA are skipped; None if
    nothing is left."""
    present = [float(e) for e in errors if e is not None and not pd.isna(e)]
    return max(present, key=abs, default=None)


def columns(df: pd.DataFrame | None = None) -> list[str]:
    """Identity columns, then the DESIGN.md metrics, then any extra metric columns of `df` (sorted)."""
    fixed = [*IDENTITY, *names.METRICS]
    extra = [] if df is None else sorted(c for c in df.columns if c not in fixed and "/" in c)
    return fixed + extra


def empty() -> pd.DataFrame:
    """A run table with no rows and every column typed."""
    return coerce(pd.DataFrame({"run_id": pd.Series([], dtype="string")}))


def coerce(df: pd.DataFrame) -> pd.DataFrame:
    """Add missing columns as NA, cast every column to its dtype, order the columns; rows untouched.

    Metric columns are the names containing "/"; other unknown columns are dropped.
    """
    if "run_id" not in df.columns:
        raise ValueError(f"a run table needs a 'run_id' column, got columns {list(df.columns)}")
    out = {}
    for col in columns(df):
        dtype = IDENTITY.get(col, METRIC_DTYPE)
        series = df[col] if col in df.columns else pd.Series(pd.NA, index=df.index, dtype="object")
        out[col] = _cast(series, col, dtype)
    table = pd.DataFrame(out, index=df.index).reset_index(drop=True)
    missing_sparsity = table["sparsity"].isna() & table["params_active"].gt(0).fillna(False)
    table.loc[missing_sparsity, "sparsity"] = table.loc[missing_sparsity, "params_total"].astype(
        "Float64"
    ) / table.loc[missing_sparsity, "params_active"].astype("Float64")
    return table


def _cast(series: pd.Series, col: str, dtype: str) -> pd.Series:
    try:
        if dtype.startswith("datetime"):
            return pd.to_datetime(series, utc=True, errors="raise").astype(dtype)
        if dtype == "Int64":
            return pd.to_numeric(series, errors="raise").round().astype("Int64")
        if dtype == "Float64":
            return pd.to_numeric(series, errors="raise").astype("Float64")
        if dtype == "boolean":
            return series.map(_to_bool, na_action="ignore").astype("boolean")
        if col == "l3_positions":
            return series.map(_positions, na_action="ignore").astype("string")
        return series.map(str, na_action="ignore").astype("string")
    except (TypeError, ValueError) as err:
        raise ValueError(f"column {col!r} cannot be read as {dtype}: {err}") from err


def _to_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise ValueError(f"not a boolean: {value!r}")


def _positions(value: object) -> str:
    """(6, 12) / "[6, 12]" / "6,12" -> "6,12"."""
    ints = re.findall(r"-?\d+", value if isinstance(value, str) else str(list(value)))
    return ",".join(ints)


def metric_columns(df: pd.DataFrame) -> list[str]:
    """Every metric column of a run table (names containing "/")."""
    return [c for c in df.columns if "/" in c]


def batch_size_columns(df: pd.DataFrame, key: str) -> dict[int, str]:
    """{batch size: column} for the per-batch-size variants of `key` present in `df`, sorted by size."""
    found = {}
    for col in df.columns:
        m = _BS_RE.search(col)
        if m and col == names.batch_size_key(key, int(m.group(1))):
            found[int(m.group(1))] = col
    return dict(sorted(found.items()))


def per_batch_size(df: pd.DataFrame, key: str) -> pd.DataFrame:
    """One per-batch-size metric in long form: run_id, family, preset, group, variant, batch_size, value."""
    cols = batch_size_columns(df, key)
    ident = ["run_id", "family", "preset", "group", "variant"]
    if not cols:
        return pd.DataFrame(
            {**{c: pd.Series([], dtype="string") for c in ident}, "batch_size": [], "value": []}
        )
    long = df[ident + list(cols.values())].melt(id_vars=ident, var_name="column", value_name="value")
    long["batch_size"] = long["column"].map({c: bs for bs, c in cols.items()}).astype("Int64")
    long = long.dropna(subset=["value"]).drop(columns="column")
    return long.sort_values(["run_id", "batch_size"]).reset_index(drop=True)


def finished(df: pd.DataFrame) -> pd.DataFrame:
    """Only the runs MLflow marks FINISHED."""
    return df[df["status"].eq("FINISHED").fillna(False)]


def family_rank(family: pd.Series) -> pd.Series:
    """Sort key: FAMILY_ORDER, then anything else."""
    order = {f: i for i, f in enumerate(FAMILY_ORDER)}
    return family.map(lambda f: order.get(f, len(order)), na_action="ignore").fillna(len(order))

"""Speed numbers and the conditions they were measured under (issue 26): which configs' speeds were measured
under contention (`timing/contended`; a run without that record counts as contended), their cells marked
"~" in the report's tables, and decode ratios vs dense — interleaved in one process when the runs logged
them (`infer/vs_dense/...`), else from separate jobs — with a summary that names only clean ratios.
"""

import pandas as pd

from results import names, schema

MARK = "~"
FOOTNOTE = (
    "~ measured under contention (timing: shared, or other jobs or processes on the node during the timed "
    "phase): not a clean number; no conclusion of this report rests on it"
)
KEYS = ["group", "family", "preset", "variant"]
INFER_SPEED = ("prefill_tokens_per_s", "decode_tokens_per_s", "ttft_s", "offload/prefill_tokens_per_s",
               "offload/decode_tokens_per_s", "offload/ttft_s", "offload_decode_ratio",
               "prefill_floor_frac", "decode_floor_frac")  # fmt: skip
INTERLEAVED = "interleaved (one process)"
SEPARATE = "separate jobs"


def run_contended(runs: pd.DataFrame) -> pd.Series:
    """Per run: True when its speed was measured under contention or nothing recorded how it was."""
    if names.TIMING_CONTENDED not in runs.columns:
        return pd.Series(True, index=runs.index, dtype=bool)
    return runs[names.TIMING_CONTENDED].fillna(1.0).gt(0).astype(bool)


def config_contended(runs: pd.DataFrame, kind: str) -> pd.DataFrame:
    """KEYS + `contended`: a config (any of its finished seeds) of job `kind` measured under contention."""
    fin = schema.finished(runs)
    fin = fin[fin["kind"].eq(kind).fillna(False)]
    flags = fin[KEYS].assign(contended=run_contended(fin))
    return flags.groupby(KEYS, dropna=False, sort=False)["contended"].any().reset_index()


def _fmt(value: object) -> str:
    return "—" if pd.isna(value) else f"{float(value):.4g}"


def mark(
    table: pd.DataFrame, flags: pd.DataFrame, columns: list[str], with_dense: tuple[str, ...] = ()
) -> pd.DataFrame:
    """`table` with each of `columns` as text, MARK before the values of contended configs: `flags`
    (config_contended) joined on the KEYS the table has (a row keyed by group alone, e.g. L3 vs MoE,
    is marked when any config of its group is); `with_dense` columns (ratios to the group's dense config)
    are marked when that dense config is contended too. A config without a record counts as contended."""
    present = [k for k in KEYS if k in table.columns]
    if table.empty or not present or not set(columns) & set(table.columns):
        return table
    by_key = flags.groupby(present, dropna=False)["contended"].any().reset_index()
    mine = table[present].merge(by_key, on=present, how="left")["contended"]
    mine = mine.fillna(True).astype(bool).to_numpy()
    theirs = mine & False
    if with_dense and {"group", "preset"} <= set(present):
        dense = flags[flags["family"].eq("dense").fillna(False)]
        dense = dense.groupby(["group", "preset"], dropna=False)["contended"].any().reset_index()
        theirs = table[["group", "preset"]].merge(dense, on=["group", "preset"], how="left")["contended"]
        theirs = theirs.fillna(False).astype(bool).to_numpy()
    out = table.copy()
    for col in (c for c in columns if c in out.columns):
        marked = mine | theirs if col in with_dense else mine
        values = zip(out[col], marked, strict=True)
        out[col] = [MARK + _fmt(v) if m and not pd.isna(v) else _fmt(v) for v, m in values]
    return out


def any_marked(table: pd.DataFrame) -> bool:
    return any(isinstance(v, str) and v.startswith(MARK) for col in table.columns for v in table[col])


_SPREAD = (names.INFER_VS_DENSE_DECODE_P10, names.INFER_VS_DENSE_DECODE_P90)


def _value(run: pd.Series, key: str) -> float:
    return float(run[key]) if key in run.index and not pd.isna(run[key]) else float("nan")


def decode_ratios(runs: pd.DataFrame) -> pd.DataFrame:
    """Per infer group, family (not dense) and batch size: decode tokens/s over dense's, the interleaved
    ratio (both timed in one process: the median over rounds, `p10`/`p90` its spread) when the run logged
    it, else the ratio of the two separate runs (no spread); `source` says which, `contended` whether
    either side was measured under contention."""
    fin = schema.finished(runs)
    fin = fin[fin["kind"].eq("infer").fillna(False)].assign(_contended=run_contended(fin))
    rows = []
    for (group, preset, variant), cell in fin.groupby(
        ["group", "preset", "variant"], dropna=False, sort=False
    ):
        dense = cell[cell["family"].eq("dense").fillna(False)]
        if dense.empty:
            continue
        d = dense.iloc[-1]
        for _, run in cell[~cell["family"].eq("dense").fillna(False)].iterrows():
            for bs, col in schema.batch_size_columns(cell, names.INFER_DECODE_TOKENS_PER_S).items():
                inter = names.batch_size_key(names.INFER_VS_DENSE_DECODE, bs)
                spread = (float("nan"), float("nan"))
                if inter in run.index and not pd.isna(run[inter]):
                    ratio, source = float(run[inter]), INTERLEAVED
                    spread = tuple(_value(run, names.batch_size_key(k, bs)) for k in _SPREAD)
                elif not pd.isna(run[col]) and not pd.isna(d[col]):
                    ratio, source = float(run[col]) / float(d[col]), SEPARATE
                else:
                    continue
                rows.append(
                    {
                        "group": group,
                        "preset": preset,
                        "variant": variant,
                        "family": run["family"],
                        "batch_size": bs,
                        "decode_vs_dense": ratio,
                        "p10": spread[0],
                        "p90": spread[1],
                        "source": source,
                        "contended": bool(run["_contended"] or d["_contended"]),
                    }
                )
    return pd.DataFrame(rows)


def ratio_summary(ratios: pd.DataFrame) -> str:
    """One line naming the clean ratios only ("bs1: l3 0.88× dense, moe 0.17× dense"); what was
    measured under contention is named as not stated."""
    if ratios.empty:
        return "no decode ratios: no infer group with a dense run"
    clean = ratios[~ratios["contended"]]
    parts = []
    for bs, cell in clean.groupby("batch_size", sort=True):
        parts.append(
            f"bs{bs}: " + ", ".join(f"{r.family} {r.decode_vs_dense:.2f}× dense" for r in cell.itertuples())
        )
    said = "; ".join(parts) if parts else "none measured alone"
    dirty = int(ratios["contended"].sum())
    return said + (f" ({dirty} ratio(s) measured under contention: not stated)" if dirty else "")

"""Looking at suites after (or while) they run: `status`, `compare` and its seeds `verdict`.

They only read, through `runs.sqlite_reader.open_reader` (no MLflow import on the default sqlite store:
`compare` prints within 1.5 s of the interpreter's start). `cancel` and `ui` act: `runs.control`.
"""

import pandas as pd

from orchestrator.readers import recorded
from orchestrator.runs.sqlite_reader import Reader, open_reader
from orchestrator.suites import registry
from results import load, names, seeds
from results.schema import match_error

_tag = names.tag_column  # a tag's column in an mlflow.search_runs frame
_PER_BATCH_DECODE = names.metric_column(names.batch_size_key(names.INFER_DECODE_TOKENS_PER_S, ""))
SUITE_COLUMNS = [
    "run_id",
    "suite",
    "experiment",
    "status",
    "started",
    "jobs",
    "ran",
    "finished",
    "failed",
    "skipped",
    "running",
]
JOB_COLUMNS = {
    _tag(names.TAG_JOB): "job",
    "state": "state",
    _tag(names.TAG_ATTEMPT): "attempt",
    names.metric_column(names.TRAIN_LOSS): "loss",
    "started": "started",
    _tag(names.TAG_ERROR): "error",
}
MIB = 2**20
RUN_ID_CHARS = 8  # enough to tell runs apart; `status` / `cancel` accept the prefix


def _count(value) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _job_counts(store: Reader, parents: pd.DataFrame) -> pd.DataFrame:
    """One row per suite invocation: its jobs, how many it ran (job runs under it) and how they ended,
    and how many it skipped because they had finished before."""
    jobs = store.runs(None, {names.TAG_RUN_TYPE: names.RUN_TYPE_JOB})
    parent_col = _tag(names.TAG_PARENT_RUN)
    rows = []
    for _, parent in parents.iterrows():
        mine = jobs[jobs[parent_col] == parent["run_id"]] if parent_col in jobs else jobs.iloc[0:0]
        status = mine["status"] if not mine.empty else pd.Series(dtype=str)
        rows.append(
            {
                "run_id": parent["run_id"][:RUN_ID_CHARS],
                "suite": parent.get(_tag(names.TAG_SUITE)),
                "experiment": store.experiment_name(parent.get("experiment_id")),
                "status": parent["status"],
                "started": parent["start_time"].strftime("%m-%d %H:%M"),
                "jobs": _count(parent.get(_tag(names.TAG_N_JOBS))),
                "ran": len(mine),
                "finished": int((status == "FINISHED").sum()),
                "failed": int(status.isin(["FAILED", "KILLED"]).sum()),
                "skipped": _count(parent.get(_tag(names.TAG_N_SKIPPED))),
                "running": int((status == "RUNNING").sum()),
            }
        )
    return pd.DataFrame(rows, columns=SUITE_COLUMNS)


def current_jobs(store: Reader, parent: pd.Series) -> pd.DataFrame:
    """The suite's current results: for each job name run under any invocation of the suite, its newest
    FINISHED run, else its newest run (so a rerun that skipped everything still shows the results it
    stands on)."""
    experiment = store.experiment_name(parent.get("experiment_id"))
    suite = parent.get(_tag(names.TAG_SUITE))
    runs = store.runs(experiment, {names.TAG_RUN_TYPE: names.RUN_TYPE_JOB, names.TAG_SUITE: suite})
    if runs.empty:
        return pd.DataFrame(columns=list(JOB_COLUMNS.values()))
    runs = runs.assign(_done=runs["status"] == "FINISHED").sort_values(["_done", "start_time"])
    current = runs.groupby(_tag(names.TAG_JOB)).tail(1)  # the last row per job: finished beats newer
    outcome = current.get(_tag(names.TAG_OUTCOME), pd.Series(None, index=current.index, dtype=object))
    state = outcome.where(outcome.notna() & (current["status"] != "RUNNING"), current["status"].str.lower())
    current = current.assign(state=state, started=current["start_time"].dt.strftime("%m-%d %H:%M"))
    present = {k: v for k, v in JOB_COLUMNS.items() if k in current}
    return current[list(present)].rename(columns=present).sort_values("job").reset_index(drop=True)


def status(target: str | None = None, tracking_uri: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(suite invocations, current results of the newest one's suite: `current_jobs`). target: a suite
    file/name, a parent run id, or None."""
    store = open_reader(tracking_uri)
    parents = recorded.suite_runs(store, target)
    if parents.empty:
        return pd.DataFrame(columns=SUITE_COLUMNS), pd.DataFrame()
    parents = parents.sort_values("start_time", ascending=False)
    return _job_counts(store, parents), current_jobs(store, parents.iloc[0])


def _first(row: pd.Series, *keys: str) -> float | None:
    for key in keys:
        value = row.get(names.metric_column(key))
        if value is not None and not pd.isna(value):
            return float(value)
    return None


def _decode_tokens_per_s(row: pd.Series) -> float | None:
    found = _first(row, names.INFER_DECODE_TOKENS_PER_S)
    if found is not None:
        return found
    per_bs = [v for k, v in row.items() if k.startswith(_PER_BATCH_DECODE) and not pd.isna(v)]
    return max(per_bs) if per_bs else None


def _mean_accuracy(row: pd.Series) -> float | None:
    """An eval job's accuracy averaged over its tasks (lm_eval/<task>/acc), as papers tabulate it."""
    prefix, suffix = names.metric_column(names.LM_EVAL_PREFIX), "/acc"
    values = [v for k, v in row.items() if k.startswith(prefix) and k.endswith(suffix) and not pd.isna(v)]
    return float(sum(values) / len(values)) if values else None


def _contended(run: pd.Series, tokens_per_s: float | None) -> bool | None:
    """Whether the run's speed was measured under contention (its timing/contended); a speed recorded
    without that verdict (a run older than it) counts as contended: nothing says it ran alone."""
    if tokens_per_s is None:
        return None
    flag = _first(run, names.TIMING_CONTENDED)
    return flag is None or flag > 0


def _compare_row(job, run: pd.Series | None) -> dict:
    """A job's row: measured numbers from its run; active / total / sparsity fall back to the planned ones
    (match/...) only when it has no run, and the `numbers` column says which."""
    row = {
        "job": job.kind,
        "family": job.labels["family"],
        "preset": job.labels["preset"],
        "variant": job.labels["variant"],
        "seed": job.labels["seed"],
    }
    r = run if run is not None else pd.Series(dtype=object)
    peak = _first(r, names.MEM_PEAK_DEVICE_BYTES)
    peak = peak if peak else _first(r, "mem/peak_host_bytes")
    tokens = _first(r, names.TRAIN_TOKENS_PER_S) if job.kind == "train" else _decode_tokens_per_s(r)
    measured = _first(r, names.PARAMS_ACTIVE) is not None and _first(r, names.PARAMS_TOTAL) is not None
    plan = registry.planned(job.kind, job.match)
    row.update(
        {
            "numbers": "measured" if measured else "planned",
            "active": _first(r, names.PARAMS_ACTIVE) if measured else plan.get("params_active"),
            "total": _first(r, names.PARAMS_TOTAL) if measured else plan.get("params_total"),
            "sparsity": _first(r, "sparsity") if measured else plan.get("sparsity"),
            "val_loss": _first(r, "eval/val_loss"),
            "dropped": _first(r, names.LB_DROPPED_TOKEN_FRAC),  # MoE: token passes that lost every route
            "val_ppl": _first(r, "eval/val_ppl"),
            "val_bpb": _first(r, names.EVAL_VAL_BPB),
            "avg_acc": _mean_accuracy(r),
            "bytes/tok": _first(r, names.DATA_VAL_BYTES_PER_TOKEN),
            "tokens_per_s": tokens,
            "contended": _contended(r, tokens),
            "peak_mem_mib": None if peak is None else peak / MIB,
            "moe_max/mean": _first(r, "lb/expert_tokens_max_over_mean"),
            "l3_rows/tok": _first(r, "lb/l3_rows_per_token_mean"),
            "status": "not run" if run is None else "finished",
        }
    )
    return row


def _state(run: pd.Series) -> tuple[str, str | None]:
    """(state, one-line error) of a job run that did not finish: its failure class, or running."""
    if run["status"] == "RUNNING":
        return "running", None
    outcome = run.get(_tag(names.TAG_OUTCOME))
    outcome = outcome if isinstance(outcome, str) and outcome else str(run["status"]).lower()
    error = run.get(_tag(names.TAG_ERROR))
    return outcome, error if isinstance(error, str) and error else None


def _measured_err(row, other, key: str, planned: float | None) -> tuple[float | None, bool]:
    """(row[key] / other[key] - 1, True) when both rows are measured, else (the planned error, False)."""
    if other is not None and row["numbers"] == "measured" and other["numbers"] == "measured":
        return row[key] / other[key] - 1.0, True
    return planned, False


def _plan(job, key: str) -> float | None:
    return registry.planned(job.kind, job.match).get(key)


def _match_errors(table: pd.DataFrame, jobs) -> pd.DataFrame:
    """active_err (vs the dense job of the same group and kind) and total_err (MoE vs the group's L3 job),
    from the numbers in the table: measured against measured. When either side has no measured numbers the
    suite's planned error is shown instead and `numbers` of that row says "planned"."""
    groups = [job.labels["group"] for job in jobs]
    ref = {(g, r["job"], r["family"]): r for g, (_, r) in zip(groups, table.iterrows(), strict=True)}
    active_err, total_err, numbers = [], [], []
    for g, job, (_, r) in zip(groups, jobs, table.iterrows(), strict=True):
        a, a_ok = _measured_err(r, ref.get((g, r["job"], "dense")), "active", _plan(job, "active_rel_err"))
        t, t_ok = None, True
        if r["family"] in ("moe", "hash_moe"):  # matched iso-total with the group's L3 model
            t, t_ok = _measured_err(r, ref.get((g, r["job"], "l3")), "total", _plan(job, "total_rel_err"))
        active_err.append(a)
        total_err.append(t)
        numbers.append("measured" if a_ok and t_ok else "planned")
    out = table.assign(active_err=active_err, total_err=total_err, numbers=numbers)
    out["match_err"] = [match_error(a, t) for a, t in zip(out["active_err"], out["total_err"], strict=True)]
    return out


def compare(target: str, tracking_uri: str | None = None) -> pd.DataFrame:
    """One row per job of TARGET's newest recorded invocation (`recorded.locate`: a suite file or name, an
    experiment, a parent run id). Metrics come from the job's FINISHED run (by fingerprint; else the newest
    FINISHED run of that job name, status "older (<its fingerprint>)"). A job whose newest run of this
    fingerprint did not finish shows that run's state and one-line error; "not run" means no run at all.
    active_err / total_err / match_err are measured against measured (`numbers` = "measured"); rows whose
    group was not all run show the planned errors (`numbers` = "planned")."""
    store = open_reader(tracking_uri)
    spec = recorded.locate(store, target)
    runs = store.runs(spec.experiment, {names.TAG_RUN_TYPE: names.RUN_TYPE_JOB})
    if not runs.empty:
        runs = runs.sort_values("start_time")  # later rows win below: the newest run of a job
    finished = runs[runs["status"] == "FINISHED"] if not runs.empty else runs
    by_fp = {} if finished.empty else {r[_tag(names.TAG_FINGERPRINT)]: r for _, r in finished.iterrows()}
    by_name = {} if finished.empty else {r[_tag(names.TAG_JOB)]: r for _, r in finished.iterrows()}
    latest = {} if runs.empty else {r[_tag(names.TAG_FINGERPRINT)]: r for _, r in runs.iterrows()}
    rows = []
    for job in spec.jobs:
        run = by_fp.get(job.fingerprint)
        if run is None and job.fingerprint in latest:  # ran under this config and did not finish
            row = _compare_row(job, None)
            row["status"], row["error"] = _state(latest[job.fingerprint])
            rows.append(row)
            continue
        row = _compare_row(job, run if run is not None else by_name.get(job.name))
        row["error"] = None
        if run is None and job.name in by_name:  # same job, other code version or config: say so
            row["status"] = f"older ({by_name[job.name][_tag(names.TAG_FINGERPRINT)][:8]})"
        rows.append(row)
    table = _match_errors(pd.DataFrame(rows), spec.jobs)
    order = [
        "job",
        "family",
        "preset",
        "variant",
        "seed",
        "numbers",
        "active",
        "total",
        "sparsity",
        "active_err",
        "total_err",
        "match_err",
    ]
    table = table[order + [c for c in table.columns if c not in order]]
    constant = [c for c in ("variant", "seed") if table[c].nunique() == 1]
    return table.drop(columns=constant)  # a single variant / seed says nothing per row


def verdict(target: str, tracking_uri: str | None = None) -> tuple[list[str], pd.DataFrame]:
    """(the ordering the seeds support, one line per preset; the narrow seeds table) over the finished train
    runs of TARGET's recorded jobs (`results.seeds`; bits per byte when they mix tokenizers). The table
    is empty unless some config has 2 or more seeds (with one seed the comparison table shows it all)."""
    store = open_reader(tracking_uri)
    spec = recorded.locate(store, target)
    raw = store.runs(spec.experiment, {names.TAG_RUN_TYPE: names.RUN_TYPE_JOB}, "FINISHED")
    if not raw.empty:
        raw = raw[raw[_tag(names.TAG_FINGERPRINT)].isin({job.fingerprint for job in spec.jobs})]
    runs = load.runs_from_mlflow(raw)
    metric, _ = seeds.quality(runs)
    try:
        paired = seeds.paired_table(runs, metric)
    except ValueError as err:  # an ambiguous dense reference: say so instead of failing compare
        return [f"no verdict: {err}"], pd.DataFrame()
    several = not paired.empty and paired["n_seeds"].max() >= 2
    lines = seeds.verdict(paired) + seeds.gain_kept(paired)
    return lines, seeds.narrow(runs, paired, metric) if several else pd.DataFrame()

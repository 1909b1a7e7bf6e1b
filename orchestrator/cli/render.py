"""Terminal output for the CLI: DataFrames as rich tables fitted to the terminal (compare, status,
validate, listings); live suite progress is `orchestrator.cli.live`."""

import math

import pandas as pd
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from orchestrator.suites import registry

STYLE = {
    "finished": "green",
    "skipped": "dim",
    "running": "cyan",
    "queued": "white",
    "failed": "red",
    "oom": "red",
    "infra": "yellow",
    "cancelled": "magenta",
}


def console() -> Console:
    """rich's own choice: a terminal's width, else COLUMNS when set, else 80 (a pipe or a log file gets
    the same priority columns as an 80-column terminal; `--wide` or COLUMNS=200 show more)."""
    return Console()


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        if abs(value) >= 1e6:
            return f"{value / 1e6:,.2f}M"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.4g}"
    return str(value)


# Numeric columns that reach the table as text (a "~" mark, a signed percent): still right-aligned.
TEXT_NUMBERS = ("tokens_per_s", "match_err", "active_err", "total_err")


def df_table(df: pd.DataFrame, title: str | None = None) -> Table:
    table = Table(title=title)
    for col in df.columns:
        numeric = pd.api.types.is_numeric_dtype(df[col]) or col in TEXT_NUMBERS
        table.add_column(str(col), justify="right" if numeric else "left", no_wrap=True)
    for row in df.itertuples(index=False):
        table.add_row(*(escape(_fmt(v)) for v in row))  # cells are data, not markup ("[enforce fail ...]")
    return table


# The default `compare` layout: a label column, active and total params, the state; then, in this order,
# each further column that still fits the terminal (the first four fit 80 columns on the shipped suites:
# the measured match error is what an iso-sparse comparison is read by, so it comes right after quality).
# `--wide`: every column of api.compare. Headers are short so the numbers set the widths.
NARROW = {"label": "job", "active": "active", "total": "total", "status": "state"}
EXTRA = {
    "val_loss": "val loss",
    "avg_acc": "acc",
    "match_err": "match err",
    "tokens_per_s": "tok/s",
    "val_bpb": "val bpb",
    "sparsity": "sparsity",
    "peak_mem_mib": "mem MiB",
    "val_ppl": "val ppl",
    "moe_max/mean": "moe max/mean",
    "l3_rows/tok": "l3 rows/tok",
    "dropped": "dropped",
}
# Rows whose validation bytes per token differ (a suite that overrides vocab_size retrains the BPE) measure
# loss per token in different units: bits per byte then leads and val loss moves back.
MIXED_TOKENIZERS = {"val_bpb": "val bpb", "match_err": "match err", "tokens_per_s": "tok/s"} | {
    k: v for k, v in EXTRA.items() if k not in ("val_bpb", "match_err", "tokens_per_s")
}
LABEL_PARTS = ("job", "family", "preset", "variant", "seed")


def _label(row: pd.Series) -> str:
    """'train l3 tiny' (+ variant / seed when the suite has several)."""
    return " ".join(str(row[c]) if c != "seed" else f"s{row[c]}" for c in LABEL_PARTS if c in row.index)


CONTENDED_NOTE = (
    "~ speed measured under contention (timing: shared, or other jobs or processes on the node during "
    "the timed phase): not a clean number"
)


def _mark_contended(df: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """tokens_per_s as text, "~" before each speed measured under contention (`contended`), and the
    footnote when any is; the frame as it is without those columns."""
    if "tokens_per_s" not in df or "contended" not in df:
        return df, []
    marked = df["contended"].fillna(False).astype(bool)
    text = ["~" + _fmt(v) if m else _fmt(v) for v, m in zip(df["tokens_per_s"], marked, strict=True)]
    return df.assign(tokens_per_s=text), [CONTENDED_NOTE] if marked.any() else []


def _signed_percent(df: pd.DataFrame, col: str = "match_err") -> pd.DataFrame:
    """A fraction column as signed percent text ("+0.07%", "-0.69%", "0" for an exact match; missing stays
    missing, so a column without any value is still left out)."""
    if col not in df:
        return df
    text = [None if pd.isna(v) else "0" if v == 0 else f"{v:+.2%}" for v in df[col]]  # None: "-"
    return df.assign(**{col: text})


def _narrow_table(df: pd.DataFrame, columns: dict[str, str]) -> Table:
    narrow = df[list(columns)].rename(columns=columns)
    table = Table(title="comparison", box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1, 0, 0))
    for col in narrow.columns:
        numeric = pd.api.types.is_numeric_dtype(narrow[col]) or col in (
            EXTRA["tokens_per_s"],
            EXTRA["match_err"],
        )
        table.add_column(col, justify="right" if numeric else "left", no_wrap=True)
    for row in narrow.itertuples(index=False):
        *cells, state = (escape(_fmt(v)) for v in row)
        table.add_row(*cells, f"[{STYLE.get(state, 'white')}]{state}")
    return table


def _fits(table: Table, width: int) -> bool:
    return Console(width=10_000).measure(table).maximum <= width


def fitted_table(
    df: pd.DataFrame,
    title: str | None,
    required: list[str],
    optional: list[str],
    width: int,
    wide: bool = False,
    styles: dict[str, dict[str, str]] | None = None,
    right: tuple[str, ...] = (),
) -> Table:
    """`compare`'s priority-column layout for any table: the `required` columns, then each of `optional`,
    in that (priority) order, that still fits `width`; shown in the DataFrame's column order, cells whole
    (never cut to "…"). wide: every column. styles: {column: {cell text: rich style}}; numbers, TEXT_NUMBERS
    and the `right` columns are right-aligned."""
    shown = list(df.columns) if wide else [c for c in required if c in df]

    def build(columns: list[str]) -> Table:
        table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1, 0, 0))
        ordered = [c for c in df.columns if c in columns]
        for col in ordered:
            numeric = pd.api.types.is_numeric_dtype(df[col]) or col in right or col in TEXT_NUMBERS
            table.add_column(str(col), justify="right" if numeric else "left", no_wrap=True)
        for row in df[ordered].itertuples(index=False):
            cells = [escape(_fmt(v)) for v in row]
            for i, col in enumerate(ordered):
                style = (styles or {}).get(col, {}).get(cells[i])
                cells[i] = f"[{style}]{cells[i]}" if style else cells[i]
            table.add_row(*cells)
        return table

    table = build(shown)
    for col in [] if wide else [c for c in optional if c in df]:
        candidate = build([*shown, col])
        if _fits(candidate, width):
            shown, table = [*shown, col], candidate
    return table


def print_table(out: Console, table: Table, wide: bool = False) -> None:
    """Print a table; wide: every cell whole, wider than the terminal if need be (it wraps or scrolls)."""
    if wide:
        needed = Console(width=10_000).measure(table).maximum
        out = Console(
            width=max(out.width, needed),
            file=out.file,
            force_terminal=out.is_terminal,
            color_system=out.color_system,
            no_color=out.no_color,
        )
    out.print(table)


def compare_view(df: pd.DataFrame, wide: bool = False, width: int = 80) -> tuple[Table, list[str]]:
    """(table, notes) for `compare`: the narrow layout (NARROW, then each EXTRA column, in order, that
    still fits `width`, in MIXED_TOKENIZERS' order when the rows' bytes per token differ; the errors of
    jobs that did not finish below the table, one each) or, wide, every column."""
    df, footnote = _mark_contended(_signed_percent(df))
    if wide or df.empty:
        return df_table(df, "comparison"), footnote
    df = df.assign(label=df.apply(_label, axis=1))
    columns = dict(NARROW)
    table = _narrow_table(df, columns)
    mixed = "bytes/tok" in df and df["bytes/tok"].dropna().nunique() > 1
    for col, header in (MIXED_TOKENIZERS if mixed else EXTRA).items():
        if col in df and df[col].isna().all():
            continue  # a column without a value says nothing (acc without eval jobs, MoE without MoE)
        more = {**{k: v for k, v in columns.items() if k != "status"}, col: header, "status": "state"}
        candidate = _narrow_table(df, more) if col in df else None
        if candidate is not None and _fits(candidate, width):
            columns, table = more, candidate
    errors = df["error"] if "error" in df else pd.Series([None] * len(df), index=df.index)
    rows = zip(df.iterrows(), errors, strict=True)
    notes = [f"{_label(r)}: {e}" for (_, r), e in rows if isinstance(e, str)]
    return table, notes + (footnote if "tokens_per_s" in columns else [])


def print_compare(out: Console, df: pd.DataFrame, wide: bool = False) -> None:
    table, notes = compare_view(df, wide, out.width)
    print_table(out, table, wide)
    for note in notes:
        out.print(note, markup=False, highlight=False)


def print_verdict(out: Console, lines: list[str], seeds: pd.DataFrame) -> None:
    """The seeds table (mean ± sd, paired Δ vs dense and its 95% interval; the secondary "val bpb" column
    only where it fits) when the suite has several seeds, then the ordering they support."""
    if not seeds.empty:
        title = f"seeds ({seeds.columns[2]}; Δ paired by seed, 95% t interval)"
        required = [c for c in seeds.columns if c != "val bpb" or c == seeds.columns[2]]
        table = fitted_table(seeds, title, required, ["val bpb"], out.width)  # cells whole: "6.469 ± 0.012"
        out.print(table if _fits(table, out.width) else compact_table(seeds, title))  # else wrap, never cut
    for line in lines:
        out.print(f"verdict: {line}", markup=False, highlight=False)


def compact_table(df: pd.DataFrame, title: str | None = None) -> Table:
    """A DataFrame without cell borders (fits more in 80 columns); long text cells wrap, none is cut."""
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1, 0, 0))
    for i, col in enumerate(df.columns):
        numeric = pd.api.types.is_numeric_dtype(df[col])
        keep = numeric or i == 0 or col in ("run_id", "started", "status", "state")  # short: never wrapped
        table.add_column(str(col), justify="right" if numeric else "left", no_wrap=keep, overflow="fold")
    for row in df.itertuples(index=False):
        table.add_row(*(escape(_fmt(v)) for v in row))
    return table


def listing(items: list[tuple[str, str]], title: str) -> Table:
    """`list`: names and their one-line notes, the notes wrapped to the terminal (never cut)."""
    table = Table(
        title=title,
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        padding=(0, 1, 0, 0),
        show_header=False,
        title_justify="left",
    )
    table.add_column("name", no_wrap=True)
    table.add_column("note", overflow="fold")
    for name, note in items:
        table.add_row(escape(name), escape(note))
    return table


def status_view(suites: pd.DataFrame) -> pd.DataFrame:
    """api.status's suite table for a terminal: without the experiment column when it repeats the suite's
    name, nor the running column when nothing runs (so it fits 80 columns)."""
    drop = []
    if (suites["experiment"] == suites["suite"]).all():
        drop.append("experiment")
    if (suites["running"] == 0).all():
        drop.append("running")
    return suites.drop(columns=drop)


STATUS_REQUIRED = ["run_id", "suite", "status"]
STATUS_OPTIONAL = ["started", "jobs", "finished", "failed", "skipped", "ran", "running", "experiment"]


def print_status(out: Console, suites: pd.DataFrame, title: str, wide: bool = False) -> None:
    """status's suite table: run id, suite and status, then the counts while they fit the terminal."""
    view = suites if wide else status_view(suites)
    styles = {"status": STYLE_UPPER}
    table = fitted_table(view, title, STATUS_REQUIRED, STATUS_OPTIONAL, out.width, wide, styles)
    print_table(out, table, wide)


STYLE_UPPER = {"FINISHED": "green", "FAILED": "red", "KILLED": "magenta", "RUNNING": "cyan"}


def print_jobs(out: Console, jobs: pd.DataFrame, title: str, wide: bool = False) -> None:
    """status's job table (job and state, then attempt, loss, started while they fit), each error on its
    own line under the table (a column would wrap at 80)."""
    errors = jobs.get("error", pd.Series(None, index=jobs.index, dtype=object))
    table = fitted_table(
        jobs.drop(columns=["error"], errors="ignore"),
        title,
        ["job", "state"],
        ["loss", "started", "attempt"],
        out.width,
        wide,
        {"state": STYLE},
    )
    print_table(out, table, wide)
    for job, error in zip(jobs["job"], errors, strict=True):
        if isinstance(error, str) and error:
            out.print(f"{job}: {error}", markup=False, highlight=False)


def print_jobs_frame(out: Console, suite, wide: bool = False) -> None:
    """validate's table: job, active, total, then the match errors, resources, plan and the fingerprint
    (8 characters; whole with --wide) while they fit the terminal."""
    df = _signed_percent(_signed_percent(jobs_frame(suite), "active_err"), "total_err")
    if not wide:
        df = df.assign(fingerprint=df["fingerprint"].str[:8])
    title = f"{suite.name}: {len(suite.jobs)} jobs, valid"
    optional = ["active_err", "total_err", "gpus", "cpus", "workers", "plan", "fingerprint"]
    print_table(out, fitted_table(df, title, ["job", "active", "total"], optional, out.width, wide), wide)


def jobs_frame(suite) -> pd.DataFrame:
    """The expanded jobs of a suite: name, fingerprint, resources and the planned iso-sparse match; `plan`
    says whether the L3 rows per token were weighted by the job's corpus or estimated (budget / vocab:
    a model-free job, or a remote corpus only the job prepares)."""
    rows = [
        {
            "job": j.name,
            "fingerprint": j.fingerprint,
            "cpus": j.resources.num_cpus,
            "gpus": j.resources.num_gpus,
            "workers": j.resources.num_workers,
            "active": plan.get("params_active"),
            "total": plan.get("params_total"),
            "active_err": plan.get("active_rel_err"),
            "total_err": plan.get("total_rel_err"),
            "plan": "-" if not plan else "estimated" if plan.get("estimated") else "corpus",
        }
        for j in suite.jobs
        for plan in [registry.planned(j.kind, j.match)]
    ]
    return pd.DataFrame(rows)


def report_line(outcome, error: str | None = None) -> str:
    """Where the report went (a `reporting.ReportOutcome`), or why there is none."""
    if outcome is None:
        return f"report: not built ({error})" if error else "report: not built"
    where = f"; logged to MLflow run {outcome.parent_run_id} under report/" if outcome.parent_run_id else ""
    return f"report: {outcome.paths.html} ({outcome.n_runs} job runs){where}"

"""Terminal output for the CLI: live suite progress, DataFrames as rich tables, suite errors.

Live progress redraws a rich table on a TTY; elsewhere (pipes, logs of detached runs, or
ISOSPARSE_PLAIN_PROGRESS=1) it prints one line per job state change instead.
"""

import math
import os
import sys
import time

import pandas as pd
from rich.console import Console
from rich.live import Live
from rich.table import Table

MAX_ROWS = 20
STYLE = {"finished": "green", "skipped": "dim", "running": "cyan", "queued": "white",
         "failed": "red", "oom": "red", "infra": "yellow", "cancelled": "magenta"}  # fmt: skip


def console() -> Console:
    """A terminal's own width; 240 columns when piped (rich would assume 80 and squeeze the tables)."""
    return Console(width=None if sys.stdout.isatty() else 240)


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


def df_table(df: pd.DataFrame, title: str | None = None) -> Table:
    table = Table(title=title)
    for col in df.columns:
        numeric = pd.api.types.is_numeric_dtype(df[col])
        table.add_column(str(col), justify="right" if numeric else "left", no_wrap=True)
    for row in df.itertuples(index=False):
        table.add_row(*(_fmt(v) for v in row))
    return table


class Progress:
    """Callbacks for api.run_suite: `start(report)`, `tick(report)`, `stop()`."""

    def __init__(self, out: Console | None = None):
        self.out = out or console()
        self.plain = not self.out.is_terminal or os.environ.get("ISOSPARSE_PLAIN_PROGRESS") == "1"
        self.live: Live | None = None
        self.seen: dict[str, tuple] = {}
        self.t0 = time.monotonic()

    def _table(self, report) -> Table:
        counts = report.counts()
        summary = "  ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
        table = Table(title=f"{report.suite.name} — {len(report.jobs)} jobs — {summary}")
        for col in ("job", "state", "attempt", "step", "loss", "elapsed"):
            table.add_column(col, justify="left" if col in ("job", "state") else "right")
        order = {"running": 0, "queued": 1}
        rows = sorted(report.jobs.values(), key=lambda j: (order.get(j.state, 2), j.name))[:MAX_ROWS]
        for j in rows:
            elapsed = f"{time.monotonic() - j.started_s:.0f}s" if j.started_s and j.state == "running" else ""
            table.add_row(j.name, f"[{STYLE.get(j.state, 'white')}]{j.state}", str(j.attempt),
                          _fmt(j.step), _fmt(j.loss), elapsed)  # fmt: skip
        return table

    def start(self, report) -> None:
        suite = report.suite
        self.out.print(f"suite {suite.name}: {len(report.jobs)} jobs, experiment {suite.experiment!r}, "
                       f"parent run {report.parent_run_id}")  # fmt: skip
        if self.plain:
            self.tick(report)
        else:
            self.live = Live(self._table(report), console=self.out, refresh_per_second=4)
            self.live.start()

    def tick(self, report) -> None:
        if self.live is not None:
            self.live.update(self._table(report))
            return
        for j in report.jobs.values():
            key = (j.state, j.attempt)
            if self.seen.get(j.name) != key:
                self.seen[j.name] = key
                error = f"  ({j.error})" if j.error and j.state != "finished" else ""
                self.out.print(
                    f"[{time.monotonic() - self.t0:6.1f}s] {j.name}: {j.state} (attempt {j.attempt}){error}"
                )

    def stop(self, report) -> None:
        if self.live is not None:
            self.live.update(self._table(report))
            self.live.stop()
        else:
            self.tick(report)


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
            "active": j.match.get("params_active"),
            "total": j.match.get("params_total"),
            "active_err": j.match.get("active_rel_err"),
            "total_err": j.match.get("total_rel_err"),
            "plan": "estimated" if j.match.get("estimated") else "corpus",
        }
        for j in suite.jobs
    ]
    return pd.DataFrame(rows)


def report_line(outcome, error: str | None = None) -> str:
    """Where the report went (a `reporting.ReportOutcome`), or why there is none."""
    if outcome is None:
        return f"report: not built ({error})" if error else "report: not built"
    where = f"; logged to MLflow run {outcome.parent_run_id} under report/" if outcome.parent_run_id else ""
    return f"report: {outcome.paths.html} ({outcome.n_runs} job runs){where}"

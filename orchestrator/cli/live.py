"""Live suite progress for `isosparse run`: a rich table redrawn on a TTY; elsewhere (pipes, logs of
detached runs, or ISOSPARSE_PLAIN_PROGRESS=1) one line per job state change, a progress line per running
job every PROGRESS_EVERY_S and a heartbeat at least every HEARTBEAT_S."""

import os
import time

from rich.console import Console
from rich.live import Live
from rich.table import Table

from orchestrator.cli.render import STYLE, _fmt, console

MAX_ROWS = 20
PROGRESS_EVERY_S = 20.0  # piped logs: a line per running job this often (and one per state change)
HEARTBEAT_S = 25.0  # piped logs: never silent longer than this


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def progress_text(job, now_s: float) -> str:
    """'step 40/120, loss 6.12, 1,234 tok/s, ETA 1m05s' of a running JobState (what is known of it)."""
    if job.step is None:
        elapsed = "" if job.started_s is None else f" for {_duration(now_s - job.started_s)}"
        return f"running{elapsed}, no step reported yet"
    done = job.step + 1  # steps count from 0
    parts = [f"step {done}" + (f"/{job.total_steps}" if job.total_steps else "")]
    if job.loss is not None:
        parts.append(f"loss {job.loss:.4g}")
    rate = job.rate_steps_per_s()
    if rate and job.tokens_per_step:
        parts.append(f"{rate * job.tokens_per_step:,.0f} tok/s")
    if rate and job.total_steps:
        parts.append(f"ETA {_duration(max(job.total_steps - job.step - 1, 0) / rate)}")
    return ", ".join(parts)


def step_cell(job) -> str:
    """Steps done (the streamed step counts from 0): '5/30' running, '30/30' once finished."""
    if job.state == "finished" and job.total_steps:
        return f"{job.total_steps}/{job.total_steps}"
    if job.step is None:
        return "-"
    return f"{job.step + 1}/{job.total_steps}" if job.total_steps else str(job.step + 1)


class Progress:
    """Callbacks for api.run_suite: `start(report)`, `tick(report)`, `stop()`."""

    def __init__(self, out: Console | None = None):
        self.out = out or console()
        self.plain = not self.out.is_terminal or os.environ.get("ISOSPARSE_PLAIN_PROGRESS") == "1"
        self.live: Live | None = None
        self.seen: dict[str, tuple] = {}
        self.t0 = time.monotonic()
        self.last: dict[str, float] = {}  # when each job's last line was printed (plain mode)
        self.last_any = self.t0

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
            table.add_row(
                j.name,
                f"[{STYLE.get(j.state, 'white')}]{j.state}",
                str(j.attempt),
                step_cell(j),
                _fmt(j.loss),
                elapsed,
            )
        return table

    def start(self, report) -> None:
        suite = report.suite
        self.out.print(
            f"suite {suite.name}: {len(report.jobs)} jobs, experiment {suite.experiment!r}, "
            f"parent run {report.parent_run_id}"
        )
        if self.plain:
            self.tick(report)
        else:
            self.live = Live(self._table(report), console=self.out, refresh_per_second=4)
            self.live.start()

    def tick(self, report) -> None:
        if self.live is not None:
            self.live.update(self._table(report))
            return
        now = time.monotonic()
        for j in report.jobs.values():
            key = (j.state, j.attempt)
            if self.seen.get(j.name) != key:
                self.seen[j.name] = key
                error = f"  ({j.error})" if j.error and j.state != "finished" else ""
                self._line(f"{j.name}: {j.state} (attempt {j.attempt}){error}", j.name, now)
            elif j.state == "running" and now - self.last.get(j.name, now) >= PROGRESS_EVERY_S:
                self._line(f"{j.name}: {progress_text(j, now)}", j.name, now)
        if now - self.last_any >= HEARTBEAT_S:  # all queued, or running jobs that stream nothing yet
            counts = "  ".join(f"{k}: {v}" for k, v in sorted(report.counts().items()))
            self._line(f"{report.suite.name}: {counts}", None, now)

    def _line(self, text: str, job: str | None, now: float) -> None:
        self.out.print(f"[{now - self.t0:6.1f}s] {text}", markup=False, highlight=False)
        self.last_any = now
        if job is not None:
            self.last[job] = now

    def stop(self, report) -> None:
        if self.live is not None:
            self.live.update(self._table(report))
            self.live.stop()
        else:
            self.tick(report)

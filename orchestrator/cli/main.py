"""The `isosparse` command line: a thin typer skin over `orchestrator.api` (parse → one api call → render).
Start-up latency: `compare` / `status` import only the readers; every other command imports the api (MLflow,
Ray's link, the planner, the report's plots: seconds) inside its own function, when it runs (issue 24).
Exit codes: 0 every job finished, 1 some job failed / was cancelled, 2 bad input (a suite error, an
unusable tracking store): nothing was submitted. Option defaults are None; real defaults live in the api.
"""

from importlib.metadata import version as _dist_version
from typing import Annotated

import typer

from orchestrator.cli import clusters as cli_clusters
from orchestrator.cli import live, render
from orchestrator.cli.early_interrupt import restore_sigint
from orchestrator.readers import monitor
from orchestrator.runs import interrupts
from orchestrator.runs.ray_link import ClusterError
from orchestrator.runs.store_path import TrackingError
from orchestrator.suites.files import SuiteError


class _App(typer.Typer):
    """The console script and `python -m orchestrator.cli` call the app: such a process is the user's
    command, which `run` may end at once on Ctrl-C (`interrupts.own_process`). CliRunner tests invoke the
    command without this call, so their process is never ended."""

    def __call__(self, *args, **kwargs):
        interrupts.own_process()
        return super().__call__(*args, **kwargs)


app = _App(help="Iso-sparse scaling benchmarks of dense, L3, MoE and SCONE language models.")
app.command("plan")(cli_clusters.plan)
app.add_typer(cli_clusters.clusters_app, name="clusters")

SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Override a suite value: KEY=VALUE (YAML).")]
UriOpt = Annotated[
    str | None, typer.Option(help="MLflow tracking URI (default: sqlite under ISOSPARSE_HOME).")
]
AddrOpt = Annotated[
    str | None,
    typer.Option(
        help="Ray cluster to use: HOST:PORT, ray://HOST:10001, or auto (the cluster `ray start` runs on this "
        "machine). Default: RAY_ADDRESS when set (a Ray job's driver), else a new in-process local cluster."
    ),
]
ClusterOpt = Annotated[
    str | None,
    typer.Option(help="Cluster file: Ray address and resources per job; jobs that cannot fit are refused."),
]
WideOpt = Annotated[
    bool | None, typer.Option("--wide", help="Every column, wider than the terminal if need be.")
]
ForceOpt = Annotated[
    bool | None, typer.Option("--force", help="Submit jobs the capacity model says won't fit.")
]


_bad_input = cli_clusters.bad_input


@app.callback()
def main() -> None:
    """isosparse: compare sparse architectures at equal active and total parameters."""
    restore_sigint()  # the early Ctrl-C handling ends here


@app.command()
def version() -> None:
    """Print the installed isosparse version."""
    typer.echo(_dist_version("isosparse"))


@app.command()
def run(
    suite: str,
    set_: SetOpt = None,
    detach: Annotated[bool | None, typer.Option("--detach", help="Run in the background.")] = None,
    address: AddrOpt = None,
    tracking_uri: UriOpt = None,
    cluster: ClusterOpt = None,
    force: ForceOpt = None,
) -> None:
    """Run SUITE (a path or a shipped suite's name), print the comparison table, write the report."""
    from orchestrator import api  # here, not at the top: start-up latency (module docstring)

    out = render.console()
    where = {"address": address, "tracking_uri": tracking_uri, "cluster": cluster, "force": bool(force)}
    with api.interrupt_handling():  # Ctrl-C at any moment: within 3 s, 130, no run left RUNNING
        try:
            if detach:
                pid, log = api.run_detached(suite, set_, **where)
                out.print(
                    f"running in the background: pid {pid}, log {log}\nfollow with: isosparse status {suite}"
                )
                return
            progress = live.Progress(out)
            out.print(f"{suite}: validating, checking the store, starting Ray ...", highlight=False)
            report = api.run_suite(suite, set_, **where, on_start=progress.start, on_tick=progress.tick)
        except (SuiteError, TrackingError, ClusterError) as err:
            _end(_bad_input(err).exit_code)
        except KeyboardInterrupt:  # a library-style caller, before any run was opened
            out.print("interrupted: nothing was recorded")
            _end(130)
        progress.stop(report)
        counts = ", ".join(f"{n} {state}" for state, n in sorted(report.counts().items()))
        if report.cancelled:  # the runs are closed; the table can wait for `isosparse compare`
            out.print(f"interrupted: {counts}; rerun the same command to resume (finished jobs are skipped)")
            api.exit_now(report.exit_code)
        render.print_compare(out, api.compare(report.parent_run_id, tracking_uri=report.tracking_uri))
        render.print_verdict(out, *api.verdict(report.parent_run_id, tracking_uri=report.tracking_uri))
        out.print(render.report_line(report.report, report.report_error))
        out.print(f"{counts} in {report.wall_s:.1f}s; dashboard: isosparse ui  (store {report.tracking_uri})")
        _end(report.exit_code, graceful=True)


def _end(code: int, graceful: bool = False) -> None:
    """Exit with `code`: at once in the CLI's own process (`interrupts.exit_now`: no 20 s interpreter
    teardown, during which a Ctrl-C could not be honoured), else through typer (CliRunner tests)."""
    if interrupts.owns_process():
        interrupts.exit_now(code, graceful)
    raise typer.Exit(code)


@app.command()
def validate(
    suite: str,
    set_: SetOpt = None,
    tracking_uri: UriOpt = None,
    cluster: ClusterOpt = None,
    force: ForceOpt = None,
    wide: WideOpt = None,
) -> None:
    """Check SUITE as `run` would before submitting (its data, the cluster file's sizing, the tracking
    store's path) without running anything; list its jobs."""
    from orchestrator import api  # here, not at the top: start-up latency (module docstring)

    try:
        spec = api.validate(suite, set_, tracking_uri=tracking_uri, cluster=cluster, force=bool(force))
    except (SuiteError, TrackingError) as err:
        raise _bad_input(err) from None
    render.print_jobs_frame(render.console(), spec, bool(wide))


@app.command()
def status(
    target: Annotated[str | None, typer.Argument()] = None, tracking_uri: UriOpt = None, wide: WideOpt = None
) -> None:
    """Suite invocations (all, a SUITE's, or a parent RUN_ID) and the current results of the newest one's
    suite (each job's newest finished run, from whichever invocation ran it)."""
    try:
        suites, jobs = monitor.status(target, tracking_uri)
    except (SuiteError, TrackingError) as err:
        raise _bad_input(err) from None
    out = render.console()
    if suites.empty:
        out.print(f"no suite runs{f' match {target!r}' if target else ''} in {tracking_uri or 'the store'}")
        return
    render.print_status(out, suites, "suite runs (newest first)", bool(wide))
    if not jobs.empty:
        render.print_jobs(out, jobs, f"current results of {suites['suite'].iloc[0]}", bool(wide))


@app.command()
def cancel(target: Annotated[str | None, typer.Argument()] = None, tracking_uri: UriOpt = None) -> None:
    """Cancel running suites (all, a SUITE's, or a parent RUN_ID) started on this host."""
    from orchestrator import api  # here, not at the top: start-up latency (module docstring)

    try:
        actions = api.cancel(target, tracking_uri)
    except (SuiteError, TrackingError) as err:
        raise _bad_input(err) from None
    for run_id, action in actions or [("-", "nothing running")]:
        typer.echo(f"{run_id}: {action}")


@app.command()
def compare(
    target: str,
    tracking_uri: UriOpt = None,
    wide: Annotated[bool | None, typer.Option("--wide", help="Every column (needs ~200 columns).")] = None,
) -> None:
    """TARGET's jobs side by side, as recorded (TARGET: a suite file or name, an experiment, a parent run
    id): finished numbers, or the state and error of jobs that did not finish."""
    try:
        table = monitor.compare(target, tracking_uri)
        lines, seeds = monitor.verdict(target, tracking_uri)
    except (SuiteError, TrackingError) as err:
        raise _bad_input(err) from None
    out = render.console()
    render.print_compare(out, table, bool(wide))
    render.print_verdict(out, lines, seeds)


@app.command()
def report(
    target: str,
    out: Annotated[str | None, typer.Option(help="Folder (default: $ISOSPARSE_HOME/reports/SUITE).")] = None,
    tracking_uri: UriOpt = None,
) -> None:
    """Write the HTML/Markdown report (with figures) of TARGET's newest run (a suite file or name, an
    experiment, a parent run id) and log it onto that MLflow run."""
    from orchestrator import api  # here, not at the top: start-up latency (module docstring)

    try:
        outcome = api.report(target, tracking_uri=tracking_uri, out_dir=out)
    except (SuiteError, TrackingError) as err:
        raise _bad_input(err) from None
    render.console().print(render.report_line(outcome))


@app.command("list")
def list_(
    what: Annotated[str | None, typer.Argument(help="presets | suites | jobs (default: all three)")] = None,
) -> None:
    """List model presets, shipped suites, or job kinds (all three without an argument)."""
    from orchestrator import api  # here, not at the top: start-up latency (module docstring)

    listers = {"presets": api.list_presets, "suites": api.list_suites, "jobs": api.list_jobs}
    if what is not None and what not in listers:
        raise _bad_input(ValueError(f"list what? {what!r} is not one of {', '.join(listers)}"))
    out = render.console()
    for name in [what] if what else list(listers):
        out.print(render.listing(listers[name](), name))


@app.command()
def ui(tracking_uri: UriOpt = None, port: Annotated[int | None, typer.Option()] = None) -> None:
    """Start the MLflow UI on 127.0.0.1 over the project's store (Ctrl-C stops it)."""
    from orchestrator import api  # here, not at the top: start-up latency (module docstring)

    typer.echo("starting the MLflow UI (the first start takes a while)...")
    try:
        url, landing, proc = api.ui(tracking_uri, port or 5000)
    except TrackingError as err:
        raise _bad_input(err) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    typer.echo(f"MLflow UI: {landing}\n  (server {url}; Ctrl-C to stop)")  # once the server answers
    api.raise_on_sigterm()
    try:
        proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    app()

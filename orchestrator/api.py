"""The library behind the CLI: validate, run (attached or detached), status, cancel, compare, report,
list, ui.
Details: docs/orchestrator.md#orchestratorapi.
"""

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from clusters import kuberay
from orchestrator.planning import plan as planning
from orchestrator.planning.calibration import calibration_from_store
from orchestrator.readers import recorded
from orchestrator.readers import report as reporting
from orchestrator.runs import interrupts, ray_link
from orchestrator.runs.driver import Driver, JobState, job_state
from orchestrator.runs.store_path import check_uri, home
from orchestrator.runs.tracking import Tracker
from orchestrator.suites import registry
from orchestrator.suites.cluster_file import load_cluster
from orchestrator.suites.expansion import Suite, load_suite
from orchestrator.suites.files import shipped_suites
from results import names
from workloads import api as workloads

# Re-exported for callers that only import the api (the CLI imports the readers itself: start-up latency).
from orchestrator.readers.monitor import compare, status, verdict  # noqa: F401  isort: skip
from orchestrator.runs.control import cancel, ui  # noqa: F401  isort: skip
from orchestrator.runs.ray_link import ClusterError  # noqa: F401  isort: skip
from orchestrator.suites.files import SuiteError  # noqa: F401  isort: skip
from orchestrator.runs.store_path import TrackingError  # noqa: F401  isort: skip

# The process's Ctrl-C / SIGTERM handling and its quick exit, for the CLI.
from orchestrator.runs.interrupts import exit_now, own_process, owns_process, raise_on_sigterm  # noqa: F401  isort: skip
from orchestrator.runs.interrupts import installed as interrupt_handling  # noqa: F401  isort: skip

CANCEL_GRACE_S = 1.0  # running tasks get this long to stop after a Ctrl-C before Ray kills them; the
# rest of the 3 s a Ctrl-C may take goes to closing the runs


@dataclass
class RunReport:
    suite: Suite
    parent_run_id: str | None
    jobs: dict[str, JobState]
    cancelled: bool = False
    wall_s: float = 0.0
    tracking_uri: str = ""
    report: "reporting.ReportOutcome | None" = None
    report_error: str | None = None  # the report failed to build: the jobs' outcome stands, this says why

    @property
    def exit_code(self) -> int:
        """130 when interrupted, 0 when every job finished (or had finished before), else 1."""
        if self.cancelled:
            return interrupts.EXIT_INTERRUPTED
        return 0 if all(j.state in ("finished", "skipped") for j in self.jobs.values()) else 1

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for job in self.jobs.values():
            out[job.state] = out.get(job.state, 0) + 1
        return out


def validate(
    suite: str,
    sets: list[str] | None = None,
    *,
    tracking_uri: str | None = None,
    cluster: str | None = None,
    force: bool = False,
) -> Suite:
    """Everything `run` checks before it submits, creating nothing but data caches: the suite (SuiteError),
    with a cluster file its sizing on that cluster (`on_cluster`), the tracking store's path
    (TrackingError; a server is not contacted)."""
    spec = on_cluster(suite, sets, cluster, force)[0] if cluster is not None else load_suite(suite, sets)
    check_uri(tracking_uri)
    return spec


def on_cluster(
    suite: str, sets: list[str] | None, cluster_file: str, force: bool = False
) -> tuple[Suite, str | None]:
    """`run --cluster FILE`: the suite loaded with the cluster's resources per device (so each job is
    resolved and fingerprinted as it will run there), every job sized on the cluster (capacity model);
    returns (suite, Ray address of the cluster). Jobs that cannot fit raise a SuiteError naming them
    (nothing submitted) unless force."""

    try:
        cluster = load_cluster(cluster_file)
    except ValueError as err:
        raise SuiteError(cluster_file, [("", str(err))]) from None
    spec = load_suite(suite, sets, cluster)
    unfit = planning.unfit_jobs(planning.plan_jobs(spec.jobs, cluster))
    if unfit and not force:
        errors = [(p.name, f"does not fit on {cluster.name}: {_fit_note(p)}") for p in unfit]
        raise SuiteError(spec.path, errors + [("", "rerun with --force to submit anyway")])
    return spec, cluster.address


def _fit_note(plan) -> str:
    if plan.note:
        return plan.note
    return f"peak {plan.peak_bytes / 2**30:,.2f} GiB of {plan.capacity_bytes / 2**30:,.2f} GiB"


def calibration(tracking_uri: str | None = None):
    """The capacity model's factors fitted to the FINISHED train runs in the tracking store
    (`clusters.calibration.Calibration`); ValueError when there is nothing to fit."""

    tracker = Tracker(tracking_uri)
    tracker.check()
    return calibration_from_store(tracker.runs(None, {names.TAG_RUN_TYPE: names.RUN_TYPE_JOB}))


def plan(request, cluster_file: str | None = None, calibrate: bool = False, tracking_uri: str | None = None):
    """`isosparse plan`: `planning.plan` of a `planning.PlanRequest` on a cluster file (default: this
    machine), calibrated on the runs in the tracking store when asked.
    Raises ValueError / SuiteError / TrackingError."""

    cluster = load_cluster(cluster_file or "local")
    return planning.plan(request, cluster, calibration(tracking_uri) if calibrate else None)


def cluster_manifest(cluster_file: str, suite: str | None = None) -> str:
    """`isosparse clusters kuberay`: the KubeRay RayCluster manifest (with `suite`, a RayJob running it)."""

    return kuberay.manifests_yaml(load_cluster(cluster_file), suite)


def report(
    target: str, *, tracking_uri: str | None = None, out_dir: str | None = None, figures: bool = True
) -> "reporting.ReportOutcome":
    """Build the report (HTML + Markdown + figures) of the newest recorded invocation of TARGET (a suite
    file or name, an experiment, a parent run id) and log it onto that parent run. Raises SuiteError /
    TrackingError."""
    tracker = Tracker(tracking_uri)
    tracker.check()
    return reporting.build_and_log(
        recorded.locate(tracker, target), tracker, out_dir=out_dir, figures=figures
    )


def run_suite(
    suite: str,
    sets: list[str] | None = None,
    *,
    address: str | None = None,
    tracking_uri: str | None = None,
    cluster: str | None = None,
    force: bool = False,
    make_report: bool = True,
    num_cpus: int | None = None,
    on_start: Callable[[RunReport], None] | None = None,
    on_tick: Callable[[RunReport], None] | None = None,
) -> RunReport:
    """Run a suite to the end; see the module docstring. Raises SuiteError / TrackingError before
    anything is submitted. cluster: a cluster file (`on_cluster`; an explicit address wins over its
    address). make_report: build the report onto the parent run at the end (a report that fails to build
    is recorded in `RunReport.report_error`, never fails the suite). on_start / on_tick: progress
    callbacks (the CLI's live display)."""
    with interrupts.installed():
        return _run_suite(
            suite, sets, address, tracking_uri, cluster, force, make_report, num_cpus, on_start, on_tick
        )


def _prepare(suite, sets, address, tracking_uri, cluster, force, num_cpus):
    """Everything before the first record: (suite, tracker, job states, jobs to run, scheduling module or
    None). Not cut by a Ctrl-C (an interrupt inside an import breaks it): one raises when this returns."""
    with interrupts.deferred():
        if cluster is not None:
            spec, cluster_address = on_cluster(suite, sets, cluster, force)
            address = address or cluster_address
        else:
            spec = load_suite(suite, sets)
        tracker = Tracker(tracking_uri)
        tracker.check()
        done_before = tracker.finished_fingerprints(spec.experiment)
        jobs = {j.name: job_state(j) for j in spec.jobs}
        for job in spec.jobs:
            if job.fingerprint in done_before:
                jobs[job.name].state, jobs[job.name].run_id = "skipped", done_before[job.fingerprint]
        todo = [j for j in spec.jobs if j.fingerprint not in done_before]
        scheduling = connect(address, num_cpus) if todo else None  # ClusterError: nothing recorded yet
    return spec, tracker, jobs, todo, scheduling


def _run_suite(suite, sets, address, tracking_uri, cluster, force, make_report, num_cpus, on_start, on_tick):
    started = time.monotonic()
    spec, tracker, jobs, todo, scheduling = _prepare(
        suite, sets, address, tracking_uri, cluster, force, num_cpus
    )
    tracker.experiment_id(spec.experiment)
    report = RunReport(spec, None, jobs, tracking_uri=tracker.uri)
    tags = {
        names.TAG_SUITE_PATH: spec.path,
        names.TAG_N_JOBS: str(len(spec.jobs)),
        names.TAG_N_SKIPPED: str(len(spec.jobs) - len(todo)),
        "mlflow.note.content": _parent_note(spec, todo),  # the run's description in the MLflow UI
    }
    final = "FINISHED"
    try:
        with interrupts.deferred():  # the run and its id together, or neither
            interrupts.recording()  # from here a Ctrl-C closes runs instead of ending the process
            report.parent_run_id = tracker.start_suite(
                spec.experiment, spec.name, tags, _parent_name(spec, todo)
            )
            tracker.log_text(report.parent_run_id, recorded.jobs_json(spec.jobs), names.SUITE_JOBS)
        if on_start is not None:
            on_start(report)
        if todo:
            _schedule(scheduling, spec, tracker, report, todo, on_tick)
    except KeyboardInterrupt:
        report.cancelled, final = True, "KILLED"
    finally:
        try:
            if report.parent_run_id is not None:
                _close(report, tracker, final, make_report, started)
        finally:
            interrupts.closed()  # nothing open any more: a Ctrl-C may end the process at once
    return report


def _parent_name(spec: Suite, todo: list) -> str:
    """The parent run's name: the suite's, marked when the invocation had nothing left to run."""
    if todo:
        return spec.name
    return f"{spec.name} (rerun: all {len(spec.jobs)} jobs skipped)"


def _parent_note(spec: Suite, todo: list) -> str:
    skipped = len(spec.jobs) - len(todo)
    ran = f"Ran {len(todo)} of {len(spec.jobs)} jobs" + (
        f" ({skipped} finished earlier, skipped)" if skipped else ""
    )
    return f"{ran}. report/report.html holds the suite's merged current results (every job's newest run)."


def _close(report: RunReport, tracker: Tracker, final: str, make_report: bool, started: float) -> None:
    """Record the wall time and the report on the parent run, then close it (KILLED when interrupted,
    FAILED when a job did not finish); a Ctrl-C while the report builds closes it KILLED."""
    report.wall_s = time.monotonic() - started
    if final != "KILLED" and report.exit_code:
        final = "FAILED"
    try:
        tracker.log_metrics(report.parent_run_id, {"suite/wall_s": report.wall_s}, 0)
        if make_report and final != "KILLED":
            _attach_report(report, tracker)
    except KeyboardInterrupt:
        report.cancelled, final = True, "KILLED"
        report.report_error = report.report_error or "interrupted"
    finally:
        tracker.end_suite(report.parent_run_id, final)


def _attach_report(report: RunReport, tracker: Tracker) -> None:
    try:
        report.report = reporting.build_and_log(recorded.locate(tracker, report.parent_run_id), tracker)
    except Exception as err:  # noqa: BLE001 - the jobs' results are recorded; a report bug must not hide them
        report.report_error = f"{type(err).__name__}: {err}"


def connect(address: str | None = None, num_cpus: int | None = None):
    """Start a local in-process Ray cluster or connect to an existing one (`ray_link.resolve`: address,
    else RAY_ADDRESS, else local), and return the scheduling module. The auth environment is set before
    ray is first imported (`ray_link`); an unusable cluster raises ClusterError within seconds."""
    address = ray_link.prepare(address)  # ClusterError: unreachable, no Ray head, token missing / refused
    from orchestrator.runs import scheduling  # ray is imported only when jobs run, after prepare()

    scheduling.start(address, num_cpus)
    return scheduling


def _schedule(scheduling, spec, tracker, report, todo, on_tick) -> None:
    enforced = scheduling.timing_enforced()
    if not enforced:  # said once, on the driver's terminal; each run records it (timing/enforced)
        res = scheduling.TIMING_RESOURCE
        hint = f"""ray start --resources='{{"{res}": 1}}'"""
        print(
            f"isosparse: this cluster's nodes declare no {res!r} resource, so timed work cannot run "
            f"alone: speed numbers are marked contended (~). Start its nodes with {hint}.",
            file=sys.stderr,
        )
    driver = Driver(spec, tracker, report.parent_run_id, report, timing_enforced=enforced)
    scheduler = scheduling.Scheduler(
        storage_path=str(home() / "ray_train"),
        checkpoint_root=str(home() / "checkpoints"),
        on_event=driver.on_event,
        on_done=driver.on_done,
        on_oom=spec.on_oom,
        enforce_timing=enforced,
    )
    tick = (lambda: on_tick(report)) if on_tick is not None else None
    try:
        scheduler.run(todo, on_tick=tick)
    except KeyboardInterrupt:
        _cancel_pending(scheduler, tracker, driver, report)
        raise


def _cancel_pending(scheduler, tracker, driver, report) -> None:
    """Cancel Ray tasks (a few seconds' grace, then forced); runs still open afterwards are closed KILLED,
    queued jobs become cancelled. A second Ctrl-C meanwhile forces the exit (orchestrator.interrupts)."""
    with interrupts.deferred():
        scheduler.cancel(grace_s=CANCEL_GRACE_S, stop=interrupts.forced)
        for job in report.jobs.values():
            if job.state in ("queued", "running"):
                if job.run_id is not None:
                    tracker.kill(job.run_id, "cancelled by the user")
                job.state = "cancelled"


def run_detached(
    suite: str,
    sets: list[str] | None = None,
    *,
    address: str | None = None,
    tracking_uri: str | None = None,
    cluster: str | None = None,
    force: bool = False,
) -> tuple[int, Path]:
    """Validate (and size on the cluster), check the store, then run the suite in a background process;
    returns (pid, log path)."""
    if cluster is not None:  # refuse before detaching, not in a log nobody reads
        spec, cluster_address = on_cluster(suite, sets, cluster, force)
        address = address or cluster_address
    else:
        spec = load_suite(suite, sets)
    ray_link.check_reachable(address)
    tracker = Tracker(tracking_uri)
    tracker.check()
    log = home() / "logs" / f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "orchestrator.cli", "run", spec.path, "--tracking-uri", tracker.uri]
    cmd += [arg for s in sets or [] for arg in ("--set", s)]
    cmd += ["--address", address] if address else []
    cmd += ["--cluster", str(Path(cluster).resolve())] if cluster else []
    cmd += ["--force"] if force else []
    env = {**os.environ, "ISOSPARSE_HOME": str(home()), "ISOSPARSE_PLAIN_PROGRESS": "1"}
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    return proc.pid, log


def list_presets() -> list[tuple[str, str]]:
    return list(workloads.preset_notes().items())


def list_suites() -> list[tuple[str, str]]:

    out = []
    for path in shipped_suites():
        try:
            description = (yaml.safe_load(path.read_text()) or {}).get("description", "")
        except yaml.YAMLError:
            description = "(not valid YAML)"
        out.append((path.stem, str(description).strip().splitlines()[0] if description else ""))
    return out


def list_jobs() -> list[tuple[str, str]]:
    return [
        (name, kind.description + ("" if kind.available() else "  [not available: module missing]"))
        for name, kind in registry.JOBS.items()
    ]

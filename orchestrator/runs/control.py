"""Acting on a store's suites: `cancel` running invocations (their driver, or their runs when it is gone)
and serve the MLflow `ui` over the store. Both need MLflow (`runs.tracking`); the readers do not.
"""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from orchestrator.readers import recorded
from orchestrator.runs.store_path import home
from orchestrator.runs.tracking import Tracker, TrackingError
from results import names

_tag = names.tag_column  # a tag's column in an mlflow.search_runs frame
UI_START_TIMEOUT_S = 180.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cancel(target: str | None = None, tracking_uri: str | None = None) -> list[tuple[str, str]]:
    """Cancel running suite invocations (all, one suite's, or one parent run id) on this host: SIGINT to
    the driver, which cancels its Ray tasks and closes its runs. A driver that is gone leaves runs
    RUNNING: those are closed KILLED here. Returns (run id, what was done)."""
    tracker = Tracker(tracking_uri)
    tracker.check()
    parents = recorded.suite_runs(tracker, target)
    actions = []
    for _, run in parents[parents["status"] == "RUNNING"].iterrows() if not parents.empty else []:
        pid, host = (
            int(run.get(_tag(names.TAG_DRIVER_PID)) or 0),
            run.get(_tag(names.TAG_DRIVER_HOST)),
        )
        if host != socket.gethostname() and host != os.uname().nodename:
            actions.append((run["run_id"], f"driver runs on {host}: cancel it there"))
        elif pid and _alive(pid):
            os.kill(pid, signal.SIGINT)
            actions.append((run["run_id"], f"sent SIGINT to driver pid {pid}"))
        else:
            for child in tracker.children(run["run_id"]).itertuples():
                if child.status == "RUNNING":
                    tracker.kill(child.run_id, "driver gone")
            tracker.kill(run["run_id"], "driver gone")
            actions.append((run["run_id"], "driver gone: closed its open runs as KILLED"))
    return actions


def landing_url(tracker: Tracker, base_url: str) -> str:
    """Where a user should land: the experiment of the newest suite run, in MLflow's "Model training"
    view (MLflow 3.17's UI opens in its GenAI view, an empty Traces overview, whatever the experiment's
    kind tag says; the workflowType parameter switches it and the browser remembers it)."""
    suites = tracker.runs(None, recorded.SUITE_RUNS)
    view = "workflowType=machine_learning"
    if suites.empty:
        return f"{base_url}/#/experiments?{view}"
    newest = suites.sort_values("start_time").iloc[-1]
    return f"{base_url}/#/experiments/{newest['experiment_id']}?{view}"


def ui(tracking_uri: str | None = None, port: int = 5000) -> tuple[str, str, subprocess.Popen]:
    """Start `mlflow server` bound to 127.0.0.1 on the project store; returns (server URL, `landing_url`,
    process) once the server answers (TrackingError if it exits or does not answer within
    UI_START_TIMEOUT_S)."""
    tracker = Tracker(tracking_uri)
    tracker.check()
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        tracker.uri,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    if tracker.db_path is not None:
        cmd += ["--artifacts-destination", str(tracker.db_path.parent / "mlartifacts")]
    url = f"http://127.0.0.1:{port}"
    log = home() / "logs" / "mlflow-ui.log"  # the server's own log (a pipe nobody reads would fill up)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_until_up(url, proc, log)
    except BaseException:
        proc.terminate()
        proc.wait()
        raise
    return url, landing_url(tracker, url), proc


def _wait_until_up(
    url: str, proc: subprocess.Popen, log: Path, timeout_s: float = UI_START_TIMEOUT_S
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-5:]
            raise TrackingError(f"mlflow server exited ({proc.returncode}): " + " | ".join(tail))
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.3)
    raise TrackingError(f"mlflow server at {url} did not answer within {timeout_s:.0f} s")

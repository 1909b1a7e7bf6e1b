"""Ctrl-C (and SIGTERM) for a suite run, in three phases: before the parent run opens (start-up) and after
it closes, a press ends the CLI's process at once; while runs are open the first press cancels the jobs
and closes every run KILLED, the second skips waiting for jobs but still closes the runs, a third exits at
once. Details: docs/orchestrator.md#orchestratorrunsinterrupts.
"""

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator

import psutil

EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for a Ctrl-C
STARTUP, RECORDING, CLOSED = "startup", "recording", "closed"
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _State:
    def __init__(self) -> None:
        self.installed = False
        self.count = 0  # presses seen by the handler while installed
        self.depth = 0
        self.pending = False
        self.phase = STARTUP
        self.owns_process = False  # a real command line: may end the process (own_process)
        self.lock = threading.RLock()  # held by a phase change and, never released, by an exit at once
        self.watch: tuple[int, int] | None = None  # the wakeup pipe (read, write) of the watchdog


_state = _State()


def own_process() -> None:
    """Called by the CLI's entry (not by CliRunner tests, not by library callers): this process is the
    user's command, so a press before or after the recording phase may end it at once (`exit_at_once`)."""
    _state.owns_process = True


def owns_process() -> bool:
    return _state.owns_process


def _say(message: str) -> None:
    """Write to stderr without Python's buffered stream, whose lock another thread may hold."""
    with contextlib.suppress(OSError):
        os.write(2, f"\n{message}\n".encode())


def kill_descendants() -> None:
    """SIGKILL every process this one started, grandchildren included: the local Ray cluster being
    started or running (gcs_server, raylet, its agents and workers). Ray's own shutdown takes seconds on a
    loaded machine; a cluster connected to by address has no process here and is left alone."""
    with contextlib.suppress(psutil.Error):
        for _ in range(2):  # a second pass for processes spawned while the first one killed
            for child in psutil.Process().children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    child.kill()


def exit_at_once(message: str) -> None:
    """End the process now: 130, no cleanup but the local Ray processes. Only ever called when no MLflow
    run is open (or on a third press), holding the lock forever so that no phase change can follow."""
    _state.lock.acquire()
    _say(message)
    kill_descendants()
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    os._exit(EXIT_INTERRUPTED)


def _at_once_message() -> str:
    if _state.phase == STARTUP:
        return "interrupted: nothing was recorded"
    return "interrupted: every run was already closed"


def _handler(signum, frame) -> None:
    if _state.owns_process and _state.phase != RECORDING:
        exit_at_once(_at_once_message())
    _state.count += 1
    if _state.count >= 3:
        exit_at_once("interrupted a third time: exiting now; runs not closed yet stay RUNNING")
    if _state.count == 2:
        _say("interrupted again: not waiting for jobs, closing runs (again: exit at once)")
        return  # the first press is being handled: `forced()` now cuts its wait for the jobs
    _say("interrupted: cancelling jobs, closing runs (Ctrl-C again: stop waiting for jobs)")
    if _state.depth > 0:
        _state.pending = True
        return
    raise KeyboardInterrupt


def _watchdog(read_fd: int) -> None:
    """Reads the signal numbers that `signal.set_wakeup_fd` writes at C level the moment a signal
    arrives: it acts even while the main thread sits in a long C call (Ray's start-up, a sqlite
    migration, an import), where the Python-level handler would wait. Outside the recording phase, and
    at a third press, it ends the process; otherwise the handler in the main thread does the work."""
    seen = 0
    while True:
        try:
            data = os.read(read_fd, 64)
        except OSError:
            return
        if not data:
            return
        seen += sum(1 for b in data if b in SIGNALS)
        with _state.lock:
            if _state.installed and (_state.phase != RECORDING or seen >= 3):
                exit_at_once(_at_once_message() if _state.phase != RECORDING else "interrupted again")


def _start_watchdog() -> None:
    if _state.watch is None:
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)  # set_wakeup_fd's requirement
        _state.watch = (read_fd, write_fd)
        threading.Thread(target=_watchdog, args=(read_fd,), name="isosparse-interrupts", daemon=True).start()
    signal.set_wakeup_fd(_state.watch[1], warn_on_full_buffer=False)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """A block that an interrupt does not cut: a first Ctrl-C inside it raises when the block ends."""
    if not _state.installed or threading.current_thread() is not threading.main_thread():
        yield
        return
    _state.depth += 1
    try:
        yield
    finally:
        _state.depth -= 1
        if _state.depth == 0 and _state.pending:
            _state.pending = False
            raise KeyboardInterrupt


def recording() -> None:
    """The parent run is about to open: from here a press cancels and closes runs instead of exiting."""
    with _state.lock:
        _state.phase = RECORDING


def closed() -> None:
    """Every run is closed: from here a press (of the CLI's own process) ends it at once."""
    with _state.lock:
        _state.phase = CLOSED


def forced() -> bool:
    """Whether a second Ctrl-C asked not to wait for the jobs."""
    return _state.count >= 2


@contextlib.contextmanager
def installed() -> Iterator[None]:
    """Install the handler for SIGINT and SIGTERM (main thread only; elsewhere a no-op) for the block,
    in the start-up phase; nested uses are no-ops. In the CLI's own process, a watchdog thread as well."""
    if threading.current_thread() is not threading.main_thread() or _state.installed:
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in SIGNALS}
    with _state.lock:
        _state.installed, _state.count, _state.depth, _state.pending = True, 0, 0, False
        _state.phase = STARTUP
    for sig in previous:
        signal.signal(sig, _handler)
    if _state.owns_process:
        _start_watchdog()
    try:
        yield
    finally:
        if _state.owns_process:
            signal.set_wakeup_fd(-1)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        with _state.lock:
            _state.installed, _state.pending = False, False


def raise_on_sigterm() -> None:
    """Turn SIGTERM into KeyboardInterrupt (so `kill` cancels as cleanly as Ctrl-C); main thread only."""

    def handler(signum, frame):
        raise KeyboardInterrupt

    with contextlib.suppress(ValueError):  # not the main thread (e.g. a test runner's): Ctrl-C only
        signal.signal(signal.SIGTERM, handler)


def exit_now(code: int, graceful: bool = False) -> None:
    """End the CLI's process once every run is closed, skipping the interpreter's teardown of torch /
    pandas / MLflow and Ray's atexit shutdown (together 20 s on a loaded machine). graceful: stop the
    local Ray cluster with `ray.shutdown` (seconds); else (after a Ctrl-C, which must end within 3 s)
    SIGKILL it (`kill_descendants`). A Ctrl-C meanwhile ends the process at once (130)."""
    sys.stdout.flush()
    sys.stderr.flush()
    if graceful and "ray" in sys.modules:
        from orchestrator.runs import scheduling

        scheduling.shutdown()
    kill_descendants()
    os._exit(code)

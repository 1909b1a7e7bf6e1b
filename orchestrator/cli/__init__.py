"""The typer CLI; `orchestrator.cli:app` is the `isosparse` console script. While its modules import
(torch, MLflow, pandas: seconds on a loaded machine) a Ctrl-C exits 130 at once: nothing has started."""

import os
import signal
import threading


def _exit_interrupted(signum, frame) -> None:
    os.write(2, b"\ninterrupted\n")
    os._exit(130)


_EARLY = threading.current_thread() is threading.main_thread() and (
    signal.getsignal(signal.SIGINT) is signal.default_int_handler
)
if _EARLY:
    signal.signal(signal.SIGINT, _exit_interrupted)

from orchestrator.cli.main import app  # noqa: E402 - after the handler, on purpose

if _EARLY:
    signal.signal(signal.SIGINT, signal.default_int_handler)

__all__ = ["app"]

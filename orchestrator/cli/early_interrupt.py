"""Ctrl-C before a command starts: importing this module (first thing `orchestrator.cli` does) makes a
press exit 130 at once while pandas imports, typer builds the command and the app's callback imports the
api (MLflow ...: seconds, 20 s on a loaded machine): nothing has started. Only in a real command line
(`isosparse`, `python -m orchestrator.cli`); a test process importing the CLI keeps its SIGINT handling,
and an ignored SIGINT (a shell's background job) stays ignored."""

import os
import signal
import sys
import threading


def _exit_interrupted(signum, frame) -> None:
    os.write(2, b"\ninterrupted\n")
    os._exit(130)


def restore_sigint() -> None:
    """A command starts (the app's callback): Ctrl-C is a KeyboardInterrupt again, or `run`'s handling."""
    if signal.getsignal(signal.SIGINT) is _exit_interrupted:
        signal.signal(signal.SIGINT, signal.default_int_handler)


_ENTRY = sys.argv[0] == "-m" or sys.argv[0].endswith(("/isosparse", "orchestrator/cli/__main__.py"))
_MAIN = threading.current_thread() is threading.main_thread()
if _ENTRY and _MAIN and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
    signal.signal(signal.SIGINT, _exit_interrupted)

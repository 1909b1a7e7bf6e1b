"""`isosparse ARGS` run the way the console script runs it, with one hook (argv[1]) for the interrupt tests.
At the hooked point it writes the file $HOOK_MARKER and blocks; the test then sends SIGINT. "-masked"
hooks block SIGINT in the main thread first: the main thread then never runs a Python signal handler, as
when it sits in a long C call (Ray's start-up), so only the interrupt watchdog can end the process."""

import os
import signal
import sys
import threading
from pathlib import Path


def _block(masked: bool) -> None:
    if masked:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    Path(os.environ["HOOK_MARKER"]).write_text("reached")
    threading.Event().wait()


def _after(module, name: str, masked: bool) -> None:
    """Block after module.name has run (its effects are there: Ray's processes, the store file ...)."""
    real = getattr(module, name)

    def hooked(*args, **kwargs):
        real(*args, **kwargs)
        _block(masked)

    setattr(module, name, hooked)


def _before(module, name: str, masked: bool) -> None:
    def hooked(*args, **kwargs):
        _block(masked)

    setattr(module, name, hooked)


def main() -> None:
    hook, args = sys.argv[1], sys.argv[2:]
    if hook == "ray-start-masked":  # the local cluster's processes run; the driver has not connected
        import ray._private.worker

        _before(ray._private.worker, "connect", masked=True)
    elif hook == "store-masked":  # the new store is complete under its temporary name
        from orchestrator.runs import tracking

        _after(tracking, "_create_store", masked=True)
    elif hook == "printing":  # every run closed; the comparison table is being printed
        from orchestrator.cli import render

        _before(render, "print_compare", masked=False)
    elif hook == "long-grace":  # the first press would wait an hour for jobs that ignore the cancel
        from orchestrator import api

        api.CANCEL_GRACE_S = 3600.0
    from orchestrator.cli import app

    sys.argv = ["isosparse", *args]
    app()


if __name__ == "__main__":
    main()

"""Ctrl-C (and SIGTERM) for a running suite: the first one cancels cleanly, a second one forces the exit.
Details: docs/orchestrator.md#orchestratorrunsinterrupts.
"""

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator

EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for a Ctrl-C


class _State:
    def __init__(self) -> None:
        self.installed = False
        self.count = 0
        self.depth = 0
        self.pending = False


_state = _State()


def _handler(signum, frame) -> None:
    _state.count += 1
    if _state.count >= 2:
        sys.stderr.write("\ninterrupted again: exiting now, without closing runs\n")
        sys.stderr.flush()
        os._exit(EXIT_INTERRUPTED)
    sys.stderr.write("\ninterrupted: cancelling jobs and closing runs (Ctrl-C again to force)\n")
    sys.stderr.flush()
    if _state.depth > 0:
        _state.pending = True
        return
    raise KeyboardInterrupt


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


def interrupted() -> bool:
    """Whether a Ctrl-C arrived while the handler is installed."""
    return _state.count > 0


@contextlib.contextmanager
def installed() -> Iterator[None]:
    """Install the handler for SIGINT and SIGTERM (main thread only; elsewhere a no-op) for the block."""
    if threading.current_thread() is not threading.main_thread() or _state.installed:
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    _state.installed, _state.count, _state.depth, _state.pending = True, 0, 0, False
    for sig in previous:
        signal.signal(sig, _handler)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _state.installed, _state.pending = False, False

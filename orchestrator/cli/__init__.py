"""The typer CLI; `orchestrator.cli:app` is the `isosparse` console script. `early_interrupt` is imported
first, on purpose: a Ctrl-C during the heavy imports that follow exits 130 at once."""

from orchestrator.cli import early_interrupt
from orchestrator.cli.main import app

__all__ = ["app", "early_interrupt"]

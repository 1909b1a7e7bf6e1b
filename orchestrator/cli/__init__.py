"""The typer CLI; `orchestrator.cli:app` is the `isosparse` console script."""

from orchestrator.cli.main import app

__all__ = ["app"]

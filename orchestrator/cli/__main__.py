"""`python -m orchestrator.cli` (how detached runs and tests start the CLI)."""

from orchestrator.cli.main import app

app()

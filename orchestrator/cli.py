"""The `isosparse` command line: a thin typer skin over `orchestrator.api`.

Only `version` exists so far; `run`, `status`, `report`, `plan` and `ui` arrive with the orchestrator
issue and are deliberately absent rather than faked.
"""

from importlib.metadata import version as _dist_version

import typer

app = typer.Typer(help="Iso-sparse scaling benchmarks of dense, L3, MoE and SCONE language models.")


@app.callback()
def main() -> None:
    """isosparse: compare sparse architectures at equal active and total parameters."""


@app.command()
def version() -> None:
    """Print the installed isosparse version."""
    typer.echo(_dist_version("isosparse"))

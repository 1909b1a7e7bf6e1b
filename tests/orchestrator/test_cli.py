from importlib.metadata import version

from typer.testing import CliRunner

from orchestrator.cli import app


def test_version_command_prints_distribution_version():
    result = CliRunner().invoke(app, ["version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == version("isosparse")

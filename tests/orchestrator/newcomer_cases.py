"""Prints every case of test_newcomer_inputs.py with the exit code of `isosparse validate` and the first
line of its message (the field or file named): `PYTHONPATH=. .venv/bin/python
tests/orchestrator/newcomer_cases.py`. Temporary folders show as <tmp>."""

import os
import sys
import tempfile
from pathlib import Path

from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from test_newcomer_inputs import CASES  # noqa: E402

from orchestrator.cli.main import app  # noqa: E402


def first_line(output: str, tmp: str) -> str:
    """The message's first informative line: under a "N error(s)" header, the first error."""
    lines = [line.strip() for line in output.replace(tmp, "<tmp>").splitlines() if line.strip()]
    if not lines:
        return ""
    if lines[0].endswith(("error(s)", "errors", "error")) and len(lines) > 1:
        return lines[1]
    return lines[0].removeprefix("error: ")


def main() -> int:
    bad = 0
    for i, case in enumerate(CASES, 1):
        with tempfile.TemporaryDirectory(prefix="nc") as tmp:
            saved = dict(os.environ)
            os.environ.update(ISOSPARSE_HOME=f"{tmp}/iso", ISOSPARSE_CACHE=f"{tmp}/cache")
            os.environ.pop("MLFLOW_TRACKING_URI", None)
            (Path(tmp) / "case").mkdir()
            try:
                args, env, _ = case(Path(tmp) / "case")
                os.environ.update(env)
                result = CliRunner().invoke(app, ["validate", *args])
            finally:
                os.environ.clear()
                os.environ.update(saved)
            bad += result.exit_code != 2
            print(f"{i:>2} {case.__name__[2:]:<28} exit {result.exit_code}  {first_line(result.output, tmp)}")
    print(f"{len(CASES)} cases, {len(CASES) - bad} exit 2")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

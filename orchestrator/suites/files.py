"""A suite file before validation: where it is (a path or a shipped suite's name), its YAML mapping, its
name and experiment, and SuiteError. No pydantic and no workloads here: the readers (`status`, `compare`)
name suites by file and must start fast (issue 24); `expansion` validates and expands.
"""

from pathlib import Path
from typing import Any

import yaml

from orchestrator.suites import registry

SUITES_DIR = Path(__file__).resolve().parents[2] / "suites"


class SuiteError(ValueError):
    """Every problem found in a suite, each as (path, message)."""

    def __init__(self, source: str, errors: list[tuple[str, str]]):
        self.source, self.errors = source, list(dict.fromkeys(errors))
        where: dict[str, list[str]] = {}  # one problem, one line: jobs sharing a file list all its paths
        for path, msg in self.errors:
            where.setdefault(msg, []).append(path)
        lines = [f"  {', '.join(filter(None, p))}: {m}" if any(p) else f"  {m}" for m, p in where.items()]
        count = f"{len(lines)} error" + ("s" if len(lines) != 1 else "")
        super().__init__(f"{source}: {count}\n" + "\n".join(lines))


def resolve_path(suite: str) -> Path:
    """A path, or the name of a shipped suite ("quickstart" → suites/quickstart.yaml)."""
    path = Path(suite)
    if path.is_file():
        return path
    if path.is_dir():
        found = ", ".join(p.name for p in sorted(path.glob("*.yaml"))[:3])
        raise SuiteError(
            suite, [("", f"{path} is a folder; give a suite file{f' ({found}, ...)' if found else ''}")]
        )
    shipped = SUITES_DIR / f"{suite}.yaml"
    if shipped.is_file():
        return shipped
    known = [p.stem for p in sorted(SUITES_DIR.glob("*.yaml"))]
    raise SuiteError(suite, [("", f"no such suite file{registry.did_you_mean(suite, known)}")])


def identity(suite: str) -> tuple[str, str]:
    """(name, experiment) of a suite file or shipped name, read without validating or expanding it."""
    path = resolve_path(suite)
    raw = read(path)
    return path.stem, str(raw.get("experiment") or path.stem)


def shipped_suites() -> list[Path]:
    return sorted(SUITES_DIR.glob("*.yaml"))


def read(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise SuiteError(str(path), [("", f"not valid YAML: {e}")]) from e
    if raw is None:
        raise SuiteError(str(path), [("", "the file is empty; a suite needs at least matrix: {jobs: [...]}")])
    if not isinstance(raw, dict):
        raise SuiteError(str(path), [("", "a suite is a YAML mapping (experiment, matrix, ...)")])
    return raw

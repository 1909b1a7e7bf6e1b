"""DESIGN.md's import rules: the import-linter contracts in pyproject.toml hold, break on a wrong-way
import, and no module imports itself round a cycle (an `ast` walk, function-level imports included)."""

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("orchestrator", "workloads", "clusters", "results")
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def import_graph(root: Path, packages=PACKAGES) -> dict[str, set[str]]:
    """module -> the project modules it imports, at any depth (top level, functions, TYPE_CHECKING)."""
    files = {
        ".".join(p.relative_to(root).with_suffix("").parts).removesuffix(".__init__"): p
        for package in packages
        for p in (root / package).rglob("*.py")
    }

    def module_of(name: str) -> str | None:
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for name, path in files.items():
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {module_of(a.name) for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported |= {module_of(f"{node.module}.{a.name}") for a in node.names}
        graph[name] = imported - {None, name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHONPATH": str(root), "COLUMNS": "200"}
    cmd = [str(LINT_IMPORTS), "--config", str(root / "pyproject.toml"), "--no-cache"]
    return subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=300)


def test_no_import_cycles():
    assert cycles(import_graph(REPO)) == []


def test_the_cycle_finder_finds_a_cycle_through_a_function_level_import(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").touch()
    (tmp_path / "pkg" / "a.py").write_text("from pkg.b import f\n")
    (tmp_path / "pkg" / "b.py").write_text("def f():\n    from pkg import c\n")
    (tmp_path / "pkg" / "c.py").write_text("import pkg.a\n")
    (tmp_path / "pkg" / "d.py").write_text("from pkg.a import x\n")
    assert cycles(import_graph(tmp_path, ("pkg",))) == [["pkg.a", "pkg.b", "pkg.c"]]


def test_the_import_contracts_hold():
    out = lint_imports(REPO)
    assert out.returncode == 0, out.stdout + out.stderr
    assert " 0 broken" in out.stdout


WRONG_WAY = [  # (file, line added, the contract that must break)
    ("clusters/roofline.py", "from orchestrator.runs import tracking", "nothing imports orchestrator"),
    ("results/names.py", "import torch", "clusters and results import no torch"),
    ("workloads/models/config.py", "from workloads.jobs import result", "workloads layers"),
    ("workloads/kernels/l3_lookup/reference.py", "from workloads.l3 import layer", "workloads layers"),
    ("results/analysis.py", "from clusters import catalog", "they never import each other"),
    ("orchestrator/readers/monitor.py", "import ray", "ray only in orchestrator.runs"),
    ("orchestrator/api.py", "import mlflow", "mlflow only in orchestrator.runs.tracking"),
    ("workloads/jobs/train.py", "import pydantic", "pydantic only in orchestrator.suites"),
    ("orchestrator/readers/report.py", "from workloads.models import presets", "only through workloads.api"),
    ("orchestrator/suites/expansion.py", "from workloads.jobs.setup import FieldError", "only through"),
    ("workloads/api.py", "from workloads.jobs import setup", "workloads.api imports no torch"),
]


@pytest.mark.parametrize(("path", "line", "contract"), WRONG_WAY, ids=[w[0] for w in WRONG_WAY])
def test_a_wrong_way_import_breaks_its_contract(tmp_path, path, line, contract):
    for package in PACKAGES:
        shutil.copytree(REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    target = tmp_path / path
    target.write_text(target.read_text() + f"\n\ndef _wrong_way():\n    {line}\n")
    out = lint_imports(tmp_path)
    assert out.returncode == 1, out.stdout + out.stderr
    assert contract in out.stdout.split("Broken contracts")[1], out.stdout

"""Job fingerprints: sha256 of the fully resolved job config (canonical JSON) and the code version.
Details: docs/orchestrator.md#orchestratorsuitesfingerprint.
"""

import functools
import hashlib
import json
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
FINGERPRINT_CHARS = 16


def _git(*args: str, root: Path = REPO_ROOT) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


@functools.cache
def git_commit() -> str | None:
    """HEAD of the checkout holding this package, or None outside a git checkout."""
    return _git("rev-parse", "HEAD")


@functools.cache
def git_dirty() -> bool:
    """Whether tracked files differ from HEAD (untracked files do not count)."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    return bool(status)


def workloads_tree(root: Path = REPO_ROOT) -> str | None:
    """The git tree hash of `workloads/` at HEAD of the checkout at root, or None outside a checkout."""
    return _git("rev-parse", "HEAD:workloads", root=root)


@functools.cache
def code_version() -> str:
    """ "git:<tree hash of workloads/ at HEAD>" in a checkout, else "pkg:<isosparse version>"."""
    tree = workloads_tree()
    if tree:
        return f"git:{tree}"
    try:
        return f"pkg:{version('isosparse')}"
    except PackageNotFoundError:
        return "pkg:unknown"


def canonical_json(resolved: Any) -> str:
    return json.dumps(resolved, sort_keys=True, separators=(",", ":"), default=str)


def fingerprint(resolved: Any, code: str | None = None) -> str:
    """First 16 hex digits of sha256(canonical resolved config, code version)."""
    payload = canonical_json({"config": resolved, "code": code if code is not None else code_version()})
    return hashlib.sha256(payload.encode()).hexdigest()[:FINGERPRINT_CHARS]

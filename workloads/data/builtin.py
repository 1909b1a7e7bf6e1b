"""The built-in corpus: the Python standard library's own text, one document per module.
Details: docs/workloads.md#workloadsdatabuiltin."""

import ast
import hashlib
import io
import os
import sys
import sysconfig
import tokenize
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from workloads.fields import check_fields

# Bump when the extraction below changes what text a module yields: it is part of the fingerprint.
EXTRACTION_VERSION = "1"
SKIPPED_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"})


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files(root: Path | None = None) -> list[Path]:
    """The stdlib `.py` files in sorted order of relative path, test folders and site-packages excluded."""
    root = stdlib_dir() if root is None else root
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in SKIPPED_DIRS and not d.startswith("test_")]
        files += [Path(dirpath, f) for f in filenames if f.endswith(".py") and not f.startswith("test_")]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _docstrings(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, cleaned docstring) of the module and of every class and function in it."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        doc = ast.get_docstring(node, clean=True)
        if doc and doc.strip():
            found.append((node.body[0].lineno, doc.strip()))
    return found


def _comment_blocks(source: str) -> list[tuple[int, str]]:
    """(first line, text) of each run of comments on consecutive lines, `#` markers stripped."""
    blocks: list[tuple[int, list[str]]] = []
    last_line = -2
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type != tokenize.COMMENT:
            continue
        line = tok.start[0]
        text = tok.string.lstrip("#").strip()
        # Shebangs, coding cookies and decorative rules (#####) carry no text.
        if line <= 2 and (text.startswith("!") or "coding" in text) or not text.strip("#-=*~ "):
            continue
        if line == last_line + 1 and blocks:
            blocks[-1][1].append(text)
        else:
            blocks.append((line, [text]))
        last_line = line
    return [(line, " ".join(parts)) for line, parts in blocks]


def module_text(source: str, content: Literal["source", "docs"] = "source") -> str | None:
    """The document of one module (see the module docstring); None if it does not parse."""
    try:
        tree = ast.parse(source)
        if content == "source":
            return source if source.strip() else None
        pieces = _docstrings(tree) + _comment_blocks(source)
    except (SyntaxError, ValueError, tokenize.TokenError):
        return None
    pieces.sort(key=lambda piece: piece[0])
    return "\n\n".join(text for _, text in pieces) or None


@dataclass(frozen=True)
class BuiltinSource:
    """Text that ships with Python: one document per stdlib module (see the module docstring)."""

    content: Literal["source", "docs"] = "source"
    kind: Literal["builtin"] = "builtin"

    def __post_init__(self) -> None:
        check_fields(self)

    def check(self) -> list[tuple[str, str]]:
        """Nothing to check: the standard library is always there."""
        return []

    def documents(self) -> Iterator[str]:
        for path in stdlib_files():
            try:
                source = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            text = module_text(source, self.content)
            if text:
                yield text

    def fingerprint(self) -> str:
        """sha256 over the Python build, the extraction settings and each module's relative path + size."""
        root = stdlib_dir()
        h = hashlib.sha256()
        h.update(f"builtin v{EXTRACTION_VERSION} {sys.implementation.name} {sys.version}".encode())
        h.update(f" content={self.content}\n".encode())
        for path in stdlib_files(root):
            h.update(f"{path.relative_to(root).as_posix()} {path.stat().st_size}\n".encode())
        return h.hexdigest()

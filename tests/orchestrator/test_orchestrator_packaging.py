"""Installing isosparse prints no setuptools warning: the license is a PEP 639 SPDX expression."""

import os
import shutil
import tomllib
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_metadata_builds_without_warnings_and_declares_the_license(tmp_path):
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    shutil.copy(REPO / "README.md", tmp_path)
    for package in project["tool"]["setuptools"]["packages"]:  # empty packages: metadata needs no code
        folder = tmp_path.joinpath(*package.split("."))
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "__init__.py").touch()
    import setuptools.build_meta as backend

    (tmp_path / "out").mkdir()
    cwd = Path.cwd()
    os.chdir(tmp_path)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            dist_info = backend.prepare_metadata_for_build_wheel(str(tmp_path / "out"))
    finally:
        os.chdir(cwd)
    assert [str(w.message) for w in caught if "license" in str(w.message).lower()] == []
    metadata = (tmp_path / "out" / dist_info / "METADATA").read_text()
    assert "License-Expression: Apache-2.0" in metadata

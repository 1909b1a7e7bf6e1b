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
    for pattern in project["tool"]["setuptools"]["packages"]["find"]["include"]:  # empty packages suffice
        folder = tmp_path / pattern.removesuffix("*")
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


def test_every_package_folder_is_found_for_the_wheel():
    import setuptools

    include = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    found = set(setuptools.find_packages(REPO, include=include["include"]))
    on_disk = {
        ".".join(p.parent.relative_to(REPO).parts)
        for top in ("orchestrator", "workloads", "clusters", "results")
        for p in (REPO / top).rglob("__init__.py")
    }
    assert on_disk and found == on_disk

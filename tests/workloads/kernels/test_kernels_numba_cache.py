"""numba's cache folder follows the kernels' sources: any edit to any kernel file names a new folder."""

from pathlib import Path

from workloads.kernels import numba_cache


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_digest_changes_with_any_source_and_only_with_them(tmp_path):
    files = {"a.py": "x = 1\n", "sub/b.py": "def f(): pass\n", "notes.txt": "not a source"}

    def digest(name: str, tree: dict[str, str]) -> str:
        return numba_cache.sources_digest(_tree(tmp_path / name, tree))

    first = digest("one", files)
    assert digest("two", files) == first  # the same sources: the same folder
    assert digest("three", files | {"sub/b.py": "def f(): return 1\n"}) != first
    assert digest("four", {"a.py": "x = 1\n", "b.py": "def f(): pass\n"}) != first  # a file moved
    assert digest("five", files | {"notes.txt": "changed"}) == first  # not a source


def test_cache_dir_sits_under_numba_cache_dir_when_set(monkeypatch, tmp_path):
    digest = numba_cache.sources_digest()
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    assert numba_cache.cache_dir() == tmp_path / f"numba-{digest}"
    monkeypatch.delenv("NUMBA_CACHE_DIR")
    assert numba_cache.cache_dir() == numba_cache.KERNELS / "__pycache__" / f"numba-{digest}"

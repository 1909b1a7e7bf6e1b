"""numba's on-disk cache in one folder per version of the kernels' sources.

numba drops a cached function only when its own file changes, not when a jitted function it calls from
another file does (numba's caching notes): `sublayer_cpu` calls `small_cpu`'s lookup and `mlp_decode.cpu`
calls `sublayer_cpu`'s GEMV, so after an edit a stale mix of old and new machine code could run, and
crash (it did, once, here). The folder is named by a hash of every kernel source, so any edit starts a
fresh cache and an unchanged checkout reuses its own. It sits under NUMBA_CACHE_DIR when that is set,
else in this package's __pycache__."""

import hashlib
import os
from pathlib import Path

KERNELS = Path(__file__).resolve().parent


def sources_digest(root: Path = KERNELS) -> str:
    """A short hash of every .py file under root (paths and contents)."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def cache_dir() -> Path:
    base = os.environ.get("NUMBA_CACHE_DIR")
    return (Path(base) if base else KERNELS / "__pycache__") / f"numba-{sources_digest()}"


def use(numba) -> None:
    """Point numba's cache at `cache_dir()`; call it before the kernels' first `njit(cache=True)`."""
    numba.config.CACHE_DIR = str(cache_dir())

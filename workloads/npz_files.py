"""Cache files written whole or not at all, and .npz files with a JSON metadata record.

Used by the L3 allocation file, the SCONE f-gram file and the SCONE tag files: a job killed mid-write (or
two jobs racing on one cache) never leaves a partial file under the final name.
"""

import json
import os
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np


@contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator:
    """Yield a binary file beside `path`; it replaces `path` only when the block ends without an error."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            yield f
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_npz(path: str | os.PathLike, meta: dict, **arrays: np.ndarray) -> Path:
    """Write `arrays` plus `meta` (as sorted JSON under the key "metadata") atomically; returns the path."""
    with atomic_write(path) as f:
        np.savez(f, **arrays, metadata=np.array(json.dumps(meta, sort_keys=True)))
    return Path(path)


def load_npz(path: str | os.PathLike, keys: tuple[str, ...], what: str, fmt: str) -> tuple[dict, dict]:
    """(arrays, metadata) of a `save_npz` file. A missing file raises FileNotFoundError; an unreadable one,
    or one whose metadata "format" is not `fmt`, raises ValueError naming the file and `what` it should be."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in keys}
            meta = json.loads(str(data["metadata"]))
    except FileNotFoundError:
        raise
    except (OSError, ValueError, KeyError, EOFError, TypeError, AttributeError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path}: not a readable {what} file ({type(exc).__name__}: {exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        raise ValueError(f"{path}: metadata format is not {fmt!r}")
    return arrays, meta

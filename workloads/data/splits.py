"""Deterministic train/validation split by document, and the on-disk spool of each split's documents.
Details: docs/workloads.md#workloadsdatasplits."""

import hashlib
import itertools
from array import array
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Literal

import numpy as np

Split = Literal["train", "val"]
SPLITS: tuple[Split, ...] = ("train", "val")


def split_of(text: str, seed: int, val_fraction: float) -> Split:
    digest = hashlib.sha256(seed.to_bytes(8, "little") + text.encode("utf-8")).digest()
    return "val" if int.from_bytes(digest[:8], "little") < val_fraction * 2**64 else "train"


def _spool_paths(directory: Path, split: Split) -> tuple[Path, Path]:
    return directory / f"{split}.txt", directory / f"{split}.doc_bytes.npy"


def write_split_spools(
    documents: Iterable[str], directory: Path, seed: int, val_fraction: float, max_documents: int | None
) -> dict[str, dict[str, int]]:
    """Stream documents into `<split>.txt` (utf-8, concatenated) + `<split>.doc_bytes.npy` (int64 byte
    offsets, n_docs + 1). Empty documents are dropped. Returns {split: {"documents": n, "bytes": n}}."""
    offsets = {split: array("q", [0]) for split in SPLITS}
    files = {split: _spool_paths(directory, split)[0].open("wb") for split in SPLITS}
    try:
        for text in itertools.islice(documents, max_documents):
            if not text:
                continue
            split = split_of(text, seed, val_fraction)
            data = text.encode("utf-8")
            files[split].write(data)
            offsets[split].append(offsets[split][-1] + len(data))
    finally:
        for f in files.values():
            f.close()
    for split in SPLITS:
        np.save(_spool_paths(directory, split)[1], np.frombuffer(offsets[split], dtype=np.int64))
    return {split: {"documents": len(offsets[split]) - 1, "bytes": offsets[split][-1]} for split in SPLITS}


def read_split_spool(directory: Path, split: Split) -> Iterator[str]:
    """The documents of one split of a spool, in source order, read sequentially."""
    text_path, offsets_path = _spool_paths(directory, split)
    sizes = np.diff(np.load(offsets_path))
    with text_path.open("rb") as f:
        for size in sizes.tolist():
            yield f.read(size).decode("utf-8")

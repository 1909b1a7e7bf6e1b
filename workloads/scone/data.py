"""SCONE's part of the data pipeline: discover the f-grams on the training split and tag every split once.
Details: docs/workloads.md#workloadssconedata."""

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workloads.data import PackedDataset, PreparedData, resolve_cache_dir
from workloads.data.config import stable_hash
from workloads.models.config import SconeConfig
from workloads.scone.discovery import Fgrams, discover_fgrams_flat, load_fgrams, save_fgrams
from workloads.scone.tagging import SuffixMatcher, open_tags, tag_split

KEY_CHARS = 24


@dataclass(frozen=True, eq=False)
class SconeData:
    """The f-grams of a job, their matcher, and the tags of each split of the job's data."""

    fgrams: Fgrams
    matcher: SuffixMatcher
    tags: dict[str, np.ndarray]  # split name -> (n_tokens,) int32, -1 where no f-gram ends
    path: Path  # the f-gram file

    def packed_tags(self, split: str, seq_len: int, seed: int = 0, shuffle: bool | None = None):
        """Tag windows aligned with `PreparedData.packed(split, seq_len, seed, shuffle)`'s token windows."""
        shuffle = split == "train" if shuffle is None else shuffle
        return PackedDataset(self.tags[split], seq_len, seed=seed, shuffle=shuffle)


def _fgrams_cached(data: PreparedData, scone: SconeConfig, vocab_size: int, root: Path) -> tuple:
    key = stable_hash(
        fgrams="v1",
        data=data.fingerprint,
        vocab=vocab_size,
        n_fgrams=scone.n_fgrams,
        max_n=scone.max_n,
        min_count=scone.min_count,
    )
    path = root / f"fgrams-{key[:KEY_CHARS]}.npz"
    if path.is_file():
        return load_fgrams(path), path
    train = data.train
    starts, ends = train.doc_offsets[:-1], train.doc_offsets[1:] - 1  # documents without the separator
    fgrams = discover_fgrams_flat(
        train.tokens,
        starts,
        ends,
        vocab_size,
        scone.n_fgrams,
        max_n=scone.max_n,
        min_count=scone.min_count,
        corpus_fingerprint=data.fingerprint,
        work_dir=root,
    )
    save_fgrams(path, fgrams)
    return fgrams, path


def tag_data(matcher: SuffixMatcher, fgram_path: Path, data: PreparedData) -> dict[str, np.ndarray]:
    """Tags of both splits of `data` with `matcher` (cached next to the f-gram file, keyed by both)."""
    out = {}
    for split in ("train", "val"):
        key = stable_hash(tags="v1", fgrams=fgram_path.name, data=data.fingerprint, split=split)
        path = fgram_path.parent / f"tags-{key[:KEY_CHARS]}-{split}.bin"
        stream = data.split(split).tokens
        out[split] = open_tags(path, stream.shape[0]) if path.is_file() else tag_split(matcher, stream, path)
    return out


def prepare_scone(
    data: PreparedData, scone: SconeConfig, vocab_size: int, cache_dir: str | os.PathLike | None = None
) -> SconeData:
    """Discover (or load) the f-grams of `data`'s training split and tag both splits (see module doc)."""
    root = resolve_cache_dir(cache_dir) / "scone"
    root.mkdir(parents=True, exist_ok=True)
    fgrams, path = _fgrams_cached(data, scone, vocab_size, root)
    matcher = SuffixMatcher(fgrams)
    return SconeData(fgrams=fgrams, matcher=matcher, tags=tag_data(matcher, path, data), path=path)

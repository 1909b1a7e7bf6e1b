"""Shared fixtures for the data pipeline tests: a small synthetic corpus of unique documents on disk."""

from pathlib import Path

import numpy as np
import pytest

from workloads.data import DataConfig, TextSource

SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "sta", "ber", "gon", "til", "que", "an", "ex", "pho", "dri", "ul"]


def _lexicon(rng: np.random.Generator, n_words: int = 2000) -> list[str]:
    return sorted({"".join(rng.choice(SYLLABLES, size=rng.integers(1, 4))) for _ in range(n_words)})


def make_documents(n: int, seed: int = 0, words_per_doc: int = 150) -> list[str]:
    """n unique documents of pseudo-language text with Zipf-distributed words, ~1 KB each."""
    rng = np.random.default_rng(seed)
    lexicon = _lexicon(rng)
    weights = 1.0 / np.arange(1, len(lexicon) + 1)
    docs = []
    for i in range(n):
        words = rng.choice(lexicon, size=words_per_doc, p=weights / weights.sum())
        sentences = [" ".join(words[j : j + 10]).capitalize() + "." for j in range(0, words_per_doc, 10)]
        docs.append(f"Document {i}: " + " ".join(sentences))
    return docs


def write_corpus(directory: Path, docs: list[str]) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, doc in enumerate(docs):
        path = directory / f"doc{i:04d}.txt"
        path.write_text(doc, encoding="utf-8")
        paths.append(path)
    return paths


@pytest.fixture(name="make_documents")
def make_documents_fixture():
    return make_documents


@pytest.fixture
def corpus(tmp_path: Path) -> list[str]:
    """300 unique documents (~300 KB), written one per file under tmp_path/corpus."""
    docs = make_documents(300)
    write_corpus(tmp_path / "corpus", docs)
    return docs


@pytest.fixture
def small_config(tmp_path: Path, corpus: list[str]) -> DataConfig:
    return DataConfig(
        source=TextSource(paths=(str(tmp_path / "corpus" / "*.txt"),)),
        vocab_size=400,
        val_fraction=0.2,
        seq_len=32,
    )

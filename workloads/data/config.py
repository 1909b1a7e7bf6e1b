"""`DataConfig`: which corpus, how it is split, the tokenizer to train (or load) and the packed length.

Validated on construction; every error names the field and the value.
"""

import hashlib
import json
from dataclasses import dataclass, field

from workloads.data.sources import SOURCES, BuiltinSource, SourceSpec

EOT_TOKEN = "<|endoftext|>"
N_BYTE_TOKENS = 256  # byte-level BPE starts from one token per byte


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"DataConfig.{name} must be an integer >= {minimum}, got {value!r}")


@dataclass(frozen=True)
class DataConfig:
    """The data of one job. `vocab_size` is the BPE training target (the trained vocab may come out smaller
    on a tiny corpus; use `PreparedData.vocab_size`); it is ignored when `tokenizer_path` names a saved
    `tokenizer.json`. Documents go to validation with probability `val_fraction` (see `splits.py`)."""

    source: SourceSpec = field(default_factory=BuiltinSource)
    vocab_size: int = 8192
    special_tokens: tuple[str, ...] = (EOT_TOKEN,)
    min_frequency: int = 2
    val_fraction: float = 0.05
    split_seed: int = 0
    seq_len: int = 256
    max_documents: int | None = None  # read at most this many documents from the source (before the split)
    tokenizer_path: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.source, tuple(SOURCES.values())):
            raise ValueError(
                f"DataConfig.source must be a source spec ({', '.join(SOURCES)}), got {self.source!r}"
            )
        object.__setattr__(self, "special_tokens", tuple(self.special_tokens))
        if EOT_TOKEN not in self.special_tokens or len(set(self.special_tokens)) != len(self.special_tokens):
            raise ValueError(
                f"DataConfig.special_tokens must hold {EOT_TOKEN!r} once and no duplicates, "
                f"got {self.special_tokens!r}"
            )
        _check_int("vocab_size", self.vocab_size, N_BYTE_TOKENS + len(self.special_tokens))
        if self.vocab_size > 2**32:
            raise ValueError(f"DataConfig.vocab_size must be <= 2**32, got {self.vocab_size!r}")
        _check_int("min_frequency", self.min_frequency, 0)
        _check_int("seq_len", self.seq_len, 1)
        _check_int("split_seed", self.split_seed, 0)
        if self.split_seed >= 2**64:  # hashed as 8 bytes (splits.split_of)
            raise ValueError(f"DataConfig.split_seed must be < 2**64, got {self.split_seed!r}")
        if self.max_documents is not None:
            _check_int("max_documents", self.max_documents, 1)
        fraction = self.val_fraction  # NaN fails the comparison too
        if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 < fraction < 1:
            raise ValueError(f"DataConfig.val_fraction must be in (0, 1), got {fraction!r}")

    def corpus_key(self) -> str:
        """sha256 of what decides the split documents: source fingerprint, max_documents, split settings."""
        return stable_hash(
            corpus="v1",
            source=self.source.fingerprint(),
            max_documents=self.max_documents,
            val_fraction=float(self.val_fraction),
            split_seed=self.split_seed,
        )

    def tokenizer_key(self, corpus_key: str) -> str:
        """sha256 of what decides a trained tokenizer: the corpus key and the BPE settings."""
        return stable_hash(
            tokenizer="bytelevel-bpe-v1",
            corpus=corpus_key,
            vocab_size=self.vocab_size,
            special_tokens=list(self.special_tokens),
            min_frequency=self.min_frequency,
        )


def stable_hash(**parts: object) -> str:
    """sha256 hex digest of JSON-serializable parts, independent of their order."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()

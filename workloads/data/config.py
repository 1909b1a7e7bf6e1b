"""`DataConfig`: which corpus, how it is split, the tokenizer to train (or load) and the packed length.

Validated on construction; every error names the field and the value.
"""

import hashlib
import json
from dataclasses import dataclass, field
from typing import Annotated

from workloads.data.sources import BuiltinSource, SourceSpec
from workloads.fields import Le, Lt, NonNegInt, PosInt, UnitFraction, check_fields

EOT_TOKEN = "<|endoftext|>"
N_BYTE_TOKENS = 256  # byte-level BPE starts from one token per byte


def min_vocab_size(special_tokens: tuple[str, ...] = (EOT_TOKEN,)) -> int:
    """The smallest byte-level BPE vocabulary: one token per byte plus the special tokens."""
    return N_BYTE_TOKENS + len(special_tokens)


@dataclass(frozen=True)
class DataConfig:
    """The data of one job. `vocab_size` is the BPE training target (the trained vocab may come out smaller
    on a tiny corpus; use `PreparedData.vocab_size`); it is ignored when `tokenizer_path` names a saved
    `tokenizer.json`. Documents go to validation with probability `val_fraction` (see `splits.py`)."""

    source: SourceSpec = field(default_factory=BuiltinSource)
    vocab_size: Annotated[int, Le(2**32)] = 8192  # >= min_vocab_size(special_tokens), checked below
    special_tokens: tuple[str, ...] = (EOT_TOKEN,)
    min_frequency: NonNegInt = 2
    val_fraction: UnitFraction = 0.05
    split_seed: Annotated[NonNegInt, Lt(2**64)] = 0  # hashed as 8 bytes (splits.split_of)
    seq_len: PosInt = 256
    max_documents: PosInt | None = None  # read at most this many documents from the source (before the split)
    tokenizer_path: str | None = None

    def __post_init__(self) -> None:
        check_fields(self)
        object.__setattr__(self, "special_tokens", tuple(self.special_tokens))
        if EOT_TOKEN not in self.special_tokens or len(set(self.special_tokens)) != len(self.special_tokens):
            raise ValueError(
                f"DataConfig.special_tokens must hold {EOT_TOKEN!r} once and no duplicates, "
                f"got {self.special_tokens!r}"
            )
        if self.vocab_size < min_vocab_size(self.special_tokens):
            raise ValueError(
                f"DataConfig.vocab_size must be >= {min_vocab_size(self.special_tokens)} (one token per byte "
                f"plus the special tokens), got {self.vocab_size!r}"
            )

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

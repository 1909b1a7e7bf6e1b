"""Byte-level BPE tokenizer (GPT-2 style, Hugging Face `tokenizers`): train, save/load, token dtype.
Details: docs/workloads.md#workloadsdatatokenizer."""

from collections.abc import Iterable
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from workloads.data.config import EOT_TOKEN


def train_tokenizer(
    documents: Iterable[str],
    vocab_size: int,
    special_tokens: tuple[str, ...] = (EOT_TOKEN,),
    min_frequency: int = 2,
    n_documents: int | None = None,
) -> Tokenizer:
    """Train a byte-level BPE of at most `vocab_size` tokens (fewer if the corpus runs out of merges)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte is a token: nothing is unknown
        show_progress=False,
    )
    tokenizer.train_from_iterator(documents, trainer, length=n_documents)
    tokenizer.encode_special_tokens = True  # a runtime flag, not saved in tokenizer.json
    return tokenizer


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load a saved `tokenizer.json`; it must know `<|endoftext|>`."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ValueError(f"tokenizer_path {str(path)!r} is not a file (expected a saved tokenizer.json)")
    tokenizer = Tokenizer.from_file(str(path))
    if tokenizer.token_to_id(EOT_TOKEN) is None:
        raise ValueError(f"tokenizer {str(path)!r} has no {EOT_TOKEN!r} token, needed as document separator")
    tokenizer.encode_special_tokens = True
    return tokenizer


def eot_id(tokenizer: Tokenizer) -> int:
    token_id = tokenizer.token_to_id(EOT_TOKEN)
    if token_id is None:
        raise ValueError(f"tokenizer has no {EOT_TOKEN!r} token")
    return token_id


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id (< vocab_size) fits in 16 bits, else uint32."""
    if vocab_size > 2**32:
        raise ValueError(f"vocab_size {vocab_size} does not fit uint32 token ids")
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)

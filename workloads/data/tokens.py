"""A tokenized split on disk: a flat token memmap `<split>.bin` plus document offsets `<split>.offsets.npy`.
Details: docs/workloads.md#workloadsdatatokens."""

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

BATCH_DOCUMENTS = 512
BATCH_BYTES = 8 << 20


@dataclass(frozen=True, eq=False)
class TokenSplit:
    """One split's token stream (read-only memmap) and document offsets."""

    name: str
    tokens: np.ndarray  # (n_tokens,) uint16 or uint32
    doc_offsets: np.ndarray  # (n_documents + 1,) int64

    @property
    def n_tokens(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def n_documents(self) -> int:
        return int(self.doc_offsets.shape[0]) - 1

    def document(self, i: int) -> np.ndarray:
        """Token ids of document i, without the trailing <|endoftext|>; a view on the memmap."""
        if not 0 <= i < self.n_documents:
            raise IndexError(
                f"document {i} out of range for the {self.name} split ({self.n_documents} documents)"
            )
        return np.asarray(self.tokens[self.doc_offsets[i] : self.doc_offsets[i + 1] - 1])

    def iter_documents(self) -> Iterator[np.ndarray]:
        """Each document's token ids in order (separators excluded), as views on the memmap."""
        for i in range(self.n_documents):
            yield self.document(i)


def _batches(documents: Iterable[str]) -> Iterator[list[str]]:
    batch: list[str] = []
    size = 0
    for text in documents:
        batch.append(text)
        size += len(text)
        if len(batch) >= BATCH_DOCUMENTS or size >= BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def write_token_split(
    tokenizer: Tokenizer, documents: Iterable[str], directory: Path, split: str, dtype: np.dtype, eot: int
) -> int:
    """Tokenize `documents` into `<split>.bin` + `<split>.offsets.npy` under `directory`; returns n_tokens."""
    tokenizer.encode_special_tokens = True  # "<|endoftext|>" typed in a document is text, not a separator
    encode = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)  # fast: no offsets computed
    starts = [0]
    with (directory / f"{split}.bin").open("wb") as f:
        for batch in _batches(documents):
            ids = [encoding.ids for encoding in encode(batch, add_special_tokens=False)]
            lengths = np.fromiter((len(x) + 1 for x in ids), dtype=np.int64, count=len(ids))
            flat = np.empty(int(lengths.sum()), dtype=dtype)
            ends = np.cumsum(lengths)
            for doc_ids, end, length in zip(ids, ends.tolist(), lengths.tolist(), strict=True):
                flat[end - length : end - 1] = doc_ids
            flat[ends - 1] = eot
            flat.tofile(f)
            starts.extend((starts[-1] + ends).tolist())
    np.save(directory / f"{split}.offsets.npy", np.asarray(starts, dtype=np.int64))
    return starts[-1]


def open_token_split(directory: Path, split: str, dtype: np.dtype) -> TokenSplit:
    path = directory / f"{split}.bin"
    empty = path.stat().st_size == 0  # np.memmap refuses empty files
    tokens = np.zeros(0, dtype=dtype) if empty else np.memmap(path, dtype=dtype, mode="r")
    offsets = np.load(directory / f"{split}.offsets.npy")
    if offsets[-1] != tokens.shape[0]:
        raise ValueError(f"{path}: offsets end at {offsets[-1]} but the file holds {tokens.shape[0]} tokens")
    return TokenSplit(split, tokens, offsets)


def token_counts(tokens: np.ndarray, vocab_size: int, chunk_tokens: int = 1 << 24) -> np.ndarray:
    """(vocab_size,) int64 count of each id, in chunks so a large memmap is never copied whole."""
    counts = np.zeros(vocab_size, dtype=np.int64)
    for start in range(0, tokens.shape[0], chunk_tokens):
        counts += np.bincount(tokens[start : start + chunk_tokens], minlength=vocab_size)
    return counts

"""`prepare(config)`: source → split spool → BPE tokenizer → token memmaps + train token counts, all cached.
Details: docs/workloads.md#workloadsdatapipeline."""

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from workloads.data.config import DataConfig, stable_hash
from workloads.data.packing import PackedDataset
from workloads.data.sources import replaced_chars
from workloads.data.splits import SPLITS, Split, read_split_spool, write_split_spools
from workloads.data.tokenizer import eot_id, load_tokenizer, token_dtype, train_tokenizer
from workloads.data.tokens import TokenSplit, open_token_split, token_counts, write_token_split

log = logging.getLogger(__name__)
KEY_CHARS = 24  # of the sha256 hex digest, in cache folder names


def resolve_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The argument, else $ISOSPARSE_CACHE, else ~/.cache/isosparse."""
    if cache_dir is None:
        cache_dir = os.environ.get("ISOSPARSE_CACHE") or Path.home() / ".cache" / "isosparse"
    return Path(cache_dir).expanduser()


@dataclass(frozen=True, eq=False)
class PreparedData:
    """A tokenized, split corpus. `token_freqs` and the L3 allocation's sequences come from `train` only."""

    config: DataConfig
    tokenizer: Tokenizer
    tokenizer_path: Path
    train: TokenSplit
    val: TokenSplit
    token_freqs: np.ndarray  # (vocab_size,) int64 counts over the train stream, separators included
    fingerprint: str  # sha256 of (split documents, tokenizer file): names these exact token streams
    vocab_size: int  # of the tokenizer, which may be below config.vocab_size on a small corpus
    eot_id: int
    val_bytes: int  # UTF-8 bytes of the validation documents (separators not counted: they are no text)
    replaced_chars: int | None = (
        None  # undecodable characters the source turned into U+FFFD (None: not counted)
    )

    @property
    def n_tokens(self) -> dict[str, int]:
        return {"train": self.train.n_tokens, "val": self.val.n_tokens}

    @property
    def val_bytes_per_token(self) -> float:
        """UTF-8 bytes of the validation split over its tokens (each document's separator counted as a
        token, since the model predicts it): loss per token / (ln 2 · this) is bits per byte, a unit that
        does not depend on the tokenizer (lm-eval's `bits_per_byte`, the nanoGPT speedruns')."""
        if self.val.n_tokens == 0:
            raise ValueError("the validation split holds no tokens: bits per byte is undefined")
        return self.val_bytes / self.val.n_tokens

    def dataset_inputs(self) -> list[dict]:
        """What a run was trained and validated on, for MLflow dataset inputs: per split its name, the
        content digest of these token streams (`fingerprint`), the source and its token count."""
        source = self.config.source
        return [
            {
                "name": f"{source.kind}-{split}",
                "digest": self.fingerprint,
                "context": context,
                "source": repr(source),
                "n_tokens": self.split(split).n_tokens,
            }
            for split, context in (("train", "training"), ("val", "validation"))
        ]

    def split(self, name: Split) -> TokenSplit:
        if name not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {name!r}")
        return self.train if name == "train" else self.val

    def iter_documents(self, split: Split) -> Iterator[np.ndarray]:
        """Token ids of each document of `split` (no separator): separate sequences for LZW parsing."""
        return self.split(split).iter_documents()

    def allocation_sequences(self) -> Iterator[np.ndarray]:
        """What the L3 allocation is built from: the training documents only, never validation."""
        return self.train.iter_documents()

    def allocation_texts(self) -> Iterator[str]:
        """The training documents as text (the tokenizer round-trips exactly), for `lzw-paper`'s lines."""
        return (
            self.tokenizer.decode(ids.tolist(), skip_special_tokens=False)
            for ids in self.allocation_sequences()
        )

    def packed(
        self, split: Split, seq_len: int | None = None, seed: int = 0, shuffle: bool | None = None
    ) -> PackedDataset:
        """(input, target) windows of `split`; seq_len defaults to config.seq_len, shuffling to train only."""
        seq_len = self.config.seq_len if seq_len is None else seq_len
        shuffle = split == "train" if shuffle is None else shuffle
        return PackedDataset(self.split(split).tokens, seq_len, seed=seed, shuffle=shuffle)


def _cached(final: Path, build: Callable[[Path], None]) -> Path:
    """Return `final`, building it first through a temporary sibling folder if it does not exist yet."""
    if final.is_dir():
        log.info("data cache hit: %s", final)
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        start = time.perf_counter()
        build(tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():  # otherwise another process built the same entry first: keep theirs
                raise
        log.info("built %s in %.1f s", final, time.perf_counter() - start)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _build_corpus(config: DataConfig, directory: Path) -> None:
    with replaced_chars() as replaced:
        counts = write_split_spools(
            config.source.documents(), directory, config.split_seed, config.val_fraction, config.max_documents
        )
    for split in SPLITS:
        if counts[split]["documents"] == 0:
            # A text source reads each file as one document; a one-file corpus needs paragraphs.
            hint = (
                " or set unit: paragraph on the text source"
                if getattr(config.source, "unit", None) == "file"
                else ""
            )
            raise ValueError(
                f"the {split} split is empty ({counts['train']['documents']} train / "
                f"{counts['val']['documents']} val documents from source '{config.source.kind}'): "
                f"add documents{hint} or change val_fraction={config.val_fraction}"
            )
    meta = {
        "source": repr(config.source),
        "fingerprint": config.source.fingerprint(),
        "splits": counts,
        "replaced_chars": replaced[0],
    }
    (directory / "meta.json").write_text(json.dumps(meta, indent=2))


def _tokenizer_file(config: DataConfig, root: Path, corpus_dir: Path, corpus_key: str) -> Path:
    if config.tokenizer_path is not None:
        load_tokenizer(config.tokenizer_path)  # validate before anything is cached under its hash
        return Path(config.tokenizer_path).expanduser()

    def build(directory: Path) -> None:
        n_train = json.loads((corpus_dir / "meta.json").read_text())["splits"]["train"]["documents"]
        tokenizer = train_tokenizer(
            read_split_spool(corpus_dir, "train"),  # never the validation split
            config.vocab_size,
            config.special_tokens,
            config.min_frequency,
            n_documents=n_train,
        )
        tokenizer.save(str(directory / "tokenizer.json"))

    key = config.tokenizer_key(corpus_key)
    return _cached(root / f"tokenizer-{key[:KEY_CHARS]}", build) / "tokenizer.json"


def _build_tokens(tokenizer: Tokenizer, corpus_dir: Path, directory: Path) -> None:
    vocab_size = tokenizer.get_vocab_size()
    dtype = token_dtype(vocab_size)
    meta = {"dtype": dtype.name, "vocab_size": vocab_size, "splits": {}}
    for split in SPLITS:
        documents = read_split_spool(corpus_dir, split)
        n_tokens = write_token_split(tokenizer, documents, directory, split, dtype, eot_id(tokenizer))
        meta["splits"][split] = {"tokens": n_tokens}
    train = open_token_split(directory, "train", dtype)
    np.save(directory / "token_freqs.npy", token_counts(train.tokens, vocab_size))
    (directory / "meta.json").write_text(json.dumps(meta, indent=2))


def prepare_corpus(config: DataConfig, cache_dir: str | os.PathLike | None = None) -> tuple[Path, dict]:
    """The split documents of `config` (cached) and their meta (documents and bytes per split,
    replaced_chars); ValueError when a split is empty. What `isosparse validate` checks a corpus with."""
    corpus_dir = _cached(
        resolve_cache_dir(cache_dir) / "data" / f"corpus-{config.corpus_key()[:KEY_CHARS]}",
        lambda d: _build_corpus(config, d),
    )
    return corpus_dir, json.loads((corpus_dir / "meta.json").read_text())


def prepare(config: DataConfig, cache_dir: str | os.PathLike | None = None) -> PreparedData:
    """Split, tokenize and count the corpus of `config`, or load all of it from the cache when present."""
    root = resolve_cache_dir(cache_dir) / "data"
    corpus_key = config.corpus_key()
    corpus_dir, corpus_meta = prepare_corpus(config, cache_dir)
    tokenizer_path = _tokenizer_file(config, root, corpus_dir, corpus_key)
    tokenizer = load_tokenizer(tokenizer_path)
    tokenizer_hash = hashlib.sha256(tokenizer_path.read_bytes()).hexdigest()
    fingerprint = stable_hash(tokens="v1", corpus=corpus_key, tokenizer=tokenizer_hash)
    tokens_dir = _cached(
        root / f"tokens-{fingerprint[:KEY_CHARS]}", lambda d: _build_tokens(tokenizer, corpus_dir, d)
    )
    meta = json.loads((tokens_dir / "meta.json").read_text())
    dtype = np.dtype(meta["dtype"])
    corpus_meta = json.loads((corpus_dir / "meta.json").read_text())
    return PreparedData(
        config=config,
        tokenizer=tokenizer,
        tokenizer_path=tokenizer_path,
        train=open_token_split(tokens_dir, "train", dtype),
        val=open_token_split(tokens_dir, "val", dtype),
        token_freqs=np.load(tokens_dir / "token_freqs.npy"),
        fingerprint=fingerprint,
        vocab_size=meta["vocab_size"],
        eot_id=eot_id(tokenizer),
        val_bytes=int(corpus_meta["splits"]["val"]["bytes"]),
        replaced_chars=corpus_meta.get("replaced_chars"),
    )

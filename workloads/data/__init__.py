"""The data pipeline: corpus sources, split, byte-level BPE tokenizer, token memmaps and packing.

Entry point: `prepare(DataConfig(...)) -> PreparedData`, cached on disk (see `pipeline.py`).
"""

from workloads.data.builtin import BuiltinSource
from workloads.data.config import EOT_TOKEN, DataConfig
from workloads.data.packing import PackedDataset
from workloads.data.pipeline import PreparedData, prepare, resolve_cache_dir
from workloads.data.sources import (
    SOURCES,
    HFSource,
    ParquetSource,
    SourceSpec,
    SourceUnavailableError,
    TextSource,
    make_source,
)
from workloads.data.splits import split_of
from workloads.data.tokenizer import load_tokenizer, token_dtype, train_tokenizer
from workloads.data.tokens import TokenSplit

__all__ = [
    "EOT_TOKEN",
    "SOURCES",
    "BuiltinSource",
    "DataConfig",
    "HFSource",
    "PackedDataset",
    "ParquetSource",
    "PreparedData",
    "SourceSpec",
    "SourceUnavailableError",
    "TextSource",
    "TokenSplit",
    "load_tokenizer",
    "make_source",
    "prepare",
    "resolve_cache_dir",
    "split_of",
    "token_dtype",
    "train_tokenizer",
]

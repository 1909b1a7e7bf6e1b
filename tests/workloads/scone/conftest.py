"""Shared SCONE test material: a small corpus built from repeated phrases, its f-grams, a small model."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from workloads.models.config import ModelConfig, SconeConfig
from workloads.models.transformer import Transformer
from workloads.scone.discovery import discover_fgrams

V = 32


def phrase_corpus(seed: int = 0) -> list[np.ndarray]:
    """4 documents of 30 phrases drawn from 6 random phrases of 2-4 tokens (seeded)."""
    rng = np.random.default_rng(seed)
    phrases = [rng.integers(0, V, size=rng.integers(2, 5)) for _ in range(6)]
    return [np.concatenate([phrases[i] for i in rng.integers(0, 6, size=30)]) for _ in range(4)]


def small_config(n_fgrams: int, **scone) -> ModelConfig:
    base = ModelConfig(vocab_size=V, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64, max_seq_len=64)
    return replace(base, family="scone", scone=SconeConfig(n_fgrams=n_fgrams, max_n=4, **scone))


@pytest.fixture(scope="module")
def corpus():
    return phrase_corpus


@pytest.fixture(scope="module")
def fgrams():
    return discover_fgrams(phrase_corpus(), V, 40, max_n=4, min_count=2)


@pytest.fixture(scope="module")
def model_for():
    def build(fgrams, **scone) -> Transformer:
        torch.manual_seed(0)
        return Transformer(small_config(fgrams.n_fgrams, **scone), fgrams=fgrams).eval()

    return build


@pytest.fixture(scope="module")
def config_for():
    return small_config

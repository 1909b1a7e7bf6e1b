from dataclasses import replace

import numpy as np
import pytest

import workloads.data.pipeline as pipeline
from workloads.data import DataConfig, TextSource, prepare, resolve_cache_dir, split_of


def _split_texts(docs, config):
    texts = {"train": [], "val": []}
    for doc in docs:
        texts[split_of(doc, config.split_seed, config.val_fraction)].append(doc)
    return texts


def test_memmaps_hold_the_tokenizer_output_with_separators(tmp_path, corpus, small_config):
    prepared = prepare(small_config, cache_dir=tmp_path / "cache")
    texts = _split_texts(corpus, small_config)
    eot = prepared.eot_id
    assert prepared.tokenizer.id_to_token(eot) == "<|endoftext|>"
    for name in ("train", "val"):
        split = prepared.split(name)
        assert isinstance(split.tokens, np.memmap)
        assert split.tokens.dtype == np.uint16 and split.doc_offsets.dtype == np.int64
        assert split.n_documents == len(texts[name]) > 0
        assert split.doc_offsets[0] == 0 and split.doc_offsets[-1] == split.n_tokens
        assert np.all(np.diff(split.doc_offsets) >= 1)
        np.testing.assert_array_equal(split.tokens[split.doc_offsets[1:] - 1], eot)
        assert np.count_nonzero(split.tokens == eot) == split.n_documents  # only the separators
        expected = [prepared.tokenizer.encode(t, add_special_tokens=False).ids + [eot] for t in texts[name]]
        np.testing.assert_array_equal(split.tokens, np.concatenate(expected))
        for doc_ids, text in zip(prepared.iter_documents(name), texts[name], strict=True):
            assert prepared.tokenizer.decode(doc_ids.tolist()) == text
    assert prepared.n_tokens == {"train": prepared.train.n_tokens, "val": prepared.val.n_tokens}


def test_val_bytes_per_token_is_the_split_text_bytes_over_its_tokens(tmp_path, corpus, small_config):
    prepared = prepare(small_config, cache_dir=tmp_path / "cache")
    val_texts = _split_texts(corpus, small_config)["val"]
    n_bytes = sum(len(t.encode("utf-8")) for t in val_texts)
    n_tokens = sum(len(prepared.tokenizer.encode(t, add_special_tokens=False).ids) + 1 for t in val_texts)
    assert prepared.val_bytes == n_bytes
    assert prepared.val_bytes_per_token == n_bytes / n_tokens
    again = prepare(small_config, cache_dir=tmp_path / "cache")  # read back from the cache
    assert again.val_bytes == n_bytes


def test_token_freqs_count_the_train_split_only(tmp_path, small_config):
    prepared = prepare(small_config, cache_dir=tmp_path / "cache")
    freqs = prepared.token_freqs
    assert freqs.dtype == np.int64 and freqs.shape == (prepared.vocab_size,)
    assert freqs.sum() == prepared.n_tokens["train"]
    np.testing.assert_array_equal(freqs, np.bincount(prepared.train.tokens, minlength=prepared.vocab_size))
    assert freqs[prepared.eot_id] == prepared.train.n_documents
    allocation_docs = list(prepared.allocation_sequences())
    assert len(allocation_docs) == prepared.train.n_documents
    without_separators = prepared.train.tokens[prepared.train.tokens != prepared.eot_id]
    np.testing.assert_array_equal(np.concatenate(allocation_docs), without_separators)


def test_second_prepare_hits_the_cache(tmp_path, small_config, monkeypatch):
    first = prepare(small_config, cache_dir=tmp_path / "cache")

    def fail(*args, **kwargs):
        raise AssertionError("cache miss: this step should not run again")

    monkeypatch.setattr(TextSource, "documents", fail)
    monkeypatch.setattr(pipeline, "train_tokenizer", fail)
    monkeypatch.setattr(pipeline, "write_token_split", fail)
    second = prepare(small_config, cache_dir=tmp_path / "cache")
    assert second.fingerprint == first.fingerprint
    np.testing.assert_array_equal(second.train.tokens, first.train.tokens)
    np.testing.assert_array_equal(second.val.doc_offsets, first.val.doc_offsets)
    np.testing.assert_array_equal(second.token_freqs, first.token_freqs)

    # A new vocab size retrains the tokenizer from the cached split (the source is not read again).
    monkeypatch.undo()
    monkeypatch.setattr(TextSource, "documents", fail)
    third = prepare(replace(small_config, vocab_size=350), cache_dir=tmp_path / "cache")
    assert third.vocab_size == 350 and third.fingerprint != first.fingerprint
    assert third.train.n_documents == first.train.n_documents


def test_changed_source_or_split_settings_rebuild(tmp_path, corpus, small_config):
    first = prepare(small_config, cache_dir=tmp_path / "cache")
    reseeded = prepare(replace(small_config, split_seed=1), cache_dir=tmp_path / "cache")
    assert reseeded.fingerprint != first.fingerprint
    assert reseeded.val.n_documents != first.val.n_documents or reseeded.val.n_tokens != first.val.n_tokens
    (tmp_path / "corpus" / "doc9999.txt").write_text("A brand new document about sparse lookup tables.")
    grown = prepare(small_config, cache_dir=tmp_path / "cache")
    assert grown.fingerprint != first.fingerprint
    assert grown.train.n_documents + grown.val.n_documents == len(corpus) + 1


def test_cache_dir_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv("ISOSPARSE_CACHE", str(tmp_path / "env"))
    assert resolve_cache_dir() == tmp_path / "env"
    assert resolve_cache_dir(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("ISOSPARSE_CACHE")
    assert resolve_cache_dir().parts[-2:] == (".cache", "isosparse")


def test_large_vocab_uses_uint32(tmp_path, corpus):
    # A saved tokenizer with > 65536 ids forces uint32 token files.
    from workloads.data.tokenizer import train_tokenizer

    tokenizer = train_tokenizer(corpus[:50], vocab_size=400)
    tokenizer.add_tokens([f"<extra_{i}>" for i in range(70_000)])
    path = tmp_path / "big.json"
    tokenizer.save(str(path))
    config = DataConfig(
        source=TextSource(paths=(str(tmp_path / "corpus" / "doc000*.txt"),)),
        val_fraction=0.5,
        tokenizer_path=str(path),
    )
    prepared = prepare(config, cache_dir=tmp_path / "cache")
    assert prepared.vocab_size > 65536
    assert prepared.train.tokens.dtype == np.uint32 and prepared.token_freqs.shape == (prepared.vocab_size,)
    first_doc = prepared.tokenizer.decode(next(prepared.iter_documents("train")).tolist())
    assert first_doc in corpus[:10]


def test_prepare_rejects_a_bad_split_name(tmp_path, small_config):
    prepared = prepare(small_config, cache_dir=tmp_path / "cache")
    with pytest.raises(ValueError, match="split must be one of .*got 'test'"):
        prepared.split("test")

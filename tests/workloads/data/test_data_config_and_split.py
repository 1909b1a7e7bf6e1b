import re
from dataclasses import replace

import pytest

from workloads.data import DataConfig, TextSource, prepare, split_of
from workloads.data.splits import read_split_spool, write_split_spools


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("vocab_size", 256),  # 256 bytes + 1 special token is the minimum
        ("vocab_size", 100),
        ("val_fraction", 0.0),
        ("val_fraction", 1.0),
        ("val_fraction", -0.1),
        ("val_fraction", float("nan")),
        ("seq_len", 0),
        ("seq_len", -5),
        ("min_frequency", -1),
        ("max_documents", 0),
        ("split_seed", 2**64),  # the split hashes the seed as 8 bytes
    ],
)
def test_bad_config_values_name_the_field_and_value(field, value):
    with pytest.raises(ValueError, match=rf"DataConfig\.{field} .*got {re.escape(repr(value))}"):
        DataConfig(**{field: value})


def test_config_minimum_vocab_counts_special_tokens():
    DataConfig(vocab_size=257)
    with pytest.raises(ValueError, match=r"vocab_size must be >= 258 \(one token per byte .*got 257"):
        DataConfig(vocab_size=257, special_tokens=("<|endoftext|>", "<|pad|>"))
    with pytest.raises(ValueError, match="special_tokens must hold '<|endoftext|>'"):
        DataConfig(special_tokens=("<|pad|>",))


def test_split_is_by_document_disjoint_near_the_fraction_and_seeded(tmp_path, make_documents):
    docs = make_documents(2000, words_per_doc=20)
    assert len(set(docs)) == len(docs)
    counts = write_split_spools(iter(docs), tmp_path, seed=7, val_fraction=0.1, max_documents=None)
    train, val = list(read_split_spool(tmp_path, "train")), list(read_split_spool(tmp_path, "val"))
    assert set(train).isdisjoint(val)
    assert sorted(train + val) == sorted(docs)  # each document wholly in exactly one split
    assert train == [d for d in docs if d not in set(val)]  # source order kept
    assert counts["val"]["documents"] == len(val)
    assert counts["val"]["bytes"] == sum(len(d.encode()) for d in val)
    assert 0.08 < len(val) / len(docs) < 0.12  # binomial sd is ~0.0067
    assert [split_of(d, 7, 0.1) for d in docs] == [split_of(d, 7, 0.1) for d in docs]
    other_seed = {d for d in docs if split_of(d, 8, 0.1) == "val"}
    assert other_seed != set(val)


def test_duplicate_documents_never_straddle_the_split(tmp_path, make_documents):
    unique = make_documents(200, words_per_doc=10)
    docs = unique + unique[::-1] + unique  # every text three times, at different positions
    write_split_spools(iter(docs), tmp_path, seed=0, val_fraction=0.5, max_documents=None)
    train, val = list(read_split_spool(tmp_path, "train")), list(read_split_spool(tmp_path, "val"))
    assert set(train).isdisjoint(val)
    assert len(train) + len(val) == 600 and len(val) > 0 and len(train) > 0


def test_max_documents_limits_the_corpus(tmp_path, small_config):
    prepared = prepare(replace(small_config, max_documents=100, val_fraction=0.3), cache_dir=tmp_path / "c")
    assert prepared.train.n_documents + prepared.val.n_documents == 100


def test_an_empty_validation_split_is_an_error(tmp_path):
    docs = ["alpha beta gamma", "delta epsilon"]
    assert all(split_of(d, 0, 0.01) == "train" for d in docs)
    for i, doc in enumerate(docs):
        (tmp_path / f"{i}.txt").write_text(doc)
    source = TextSource(paths=(str(tmp_path / "*.txt"),))
    config = DataConfig(source=source, vocab_size=300, val_fraction=0.01)
    with pytest.raises(ValueError, match=r"the val split is empty \(2 train / 0 val documents"):
        prepare(config, cache_dir=tmp_path / "cache")


def test_a_one_file_text_corpus_points_at_the_paragraph_unit(tmp_path):
    (tmp_path / "all.txt").write_text("\n\n".join(f"paragraph number {i} of one file" for i in range(40)))
    source = TextSource(paths=(str(tmp_path / "all.txt"),))
    with pytest.raises(ValueError, match=r"\(1 train / 0 val documents .* or set unit: paragraph"):
        prepare(DataConfig(source=source, vocab_size=300, val_fraction=0.2), cache_dir=tmp_path / "c")
    paragraphs = replace(source, unit="paragraph")
    prepared = prepare(DataConfig(source=paragraphs, vocab_size=300, val_fraction=0.2), tmp_path / "c")
    assert prepared.train.n_documents + prepared.val.n_documents == 40 and prepared.val.n_documents > 0

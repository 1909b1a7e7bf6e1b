from dataclasses import replace

import numpy as np
import pytest

from workloads.data import EOT_TOKEN, DataConfig, TextSource, load_tokenizer, prepare, split_of, token_dtype
from workloads.data.tokenizer import train_tokenizer

ROUND_TRIP = [
    "",
    "plain words",
    "  leading and trailing spaces \n\n\ttabs\r\nand CRLF",
    "unicode: naïve café, Ελληνικά, 中文字符, emoji 😀👍🏽",
    "code: def f(x):\n    return x ** 2  # square\n",
    "special-looking text <|endoftext|> is tokenized as text",
]


def test_byte_level_bpe_round_trips_unseen_text(make_documents):
    tokenizer = train_tokenizer(make_documents(100), vocab_size=500)
    assert tokenizer.get_vocab_size() == 500
    assert tokenizer.token_to_id(EOT_TOKEN) == 0  # special tokens take the first ids
    for text in ROUND_TRIP:
        ids = tokenizer.encode(text, add_special_tokens=False).ids
        assert tokenizer.decode(ids, skip_special_tokens=False) == text
        assert tokenizer.token_to_id(EOT_TOKEN) not in ids  # special-token text in a document stays text
    assert len(tokenizer.encode("Document", add_special_tokens=False).ids) == 1  # frequent: one token


def test_tokenizer_is_trained_on_the_training_split_only(tmp_path):
    # Each document is one made-up 7-letter word repeated: BPE learns a word iff its document is in train.
    rng = np.random.default_rng(0)
    words = sorted({"".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), 7)) for _ in range(60)})
    for i, word in enumerate(words):
        (tmp_path / f"{i:03d}.txt").write_text(" ".join([word] * 40))
    source = TextSource(paths=(str(tmp_path / "*.txt"),))
    config = DataConfig(source=source, vocab_size=1000, val_fraction=0.3, min_frequency=2)
    prepared = prepare(config, cache_dir=tmp_path / "cache")
    assert prepared.vocab_size < 1000  # merges ran out: every train word was learned whole
    n_tokens = {}
    for word in words:
        doc = " ".join([word] * 40)
        n_tokens.setdefault(split_of(doc, 0, 0.3), []).append(len(prepared.tokenizer.encode(" " + word).ids))
    assert len(n_tokens["val"]) > 0
    assert set(n_tokens["train"]) == {1}
    assert min(n_tokens["val"]) > 1


def test_saved_tokenizer_json_loads_and_is_used_by_prepare(tmp_path, small_config):
    first = prepare(small_config, cache_dir=tmp_path / "a")
    saved = tmp_path / "my_tokenizer.json"
    first.tokenizer.save(str(saved))
    loaded = load_tokenizer(saved)
    assert loaded.encode_special_tokens
    assert loaded.encode(ROUND_TRIP[3]).ids == first.tokenizer.encode(ROUND_TRIP[3]).ids
    # vocab_size is ignored with tokenizer_path; the data equals the trained run's.
    config = replace(small_config, tokenizer_path=str(saved), vocab_size=999)
    second = prepare(config, cache_dir=tmp_path / "b")
    assert second.tokenizer_path == saved
    assert second.vocab_size == first.vocab_size
    assert second.fingerprint == first.fingerprint
    np.testing.assert_array_equal(second.train.tokens, first.train.tokens)


def test_bad_tokenizer_path_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="is not a file"):
        load_tokenizer(tmp_path / "missing.json")
    no_eot = train_tokenizer(["some text here"] * 5, vocab_size=300, special_tokens=("<|pad|>",))
    no_eot.save(str(tmp_path / "t.json"))
    with pytest.raises(ValueError, match="has no '<|endoftext|>' token"):
        load_tokenizer(tmp_path / "t.json")


@pytest.mark.parametrize(
    ("vocab_size", "dtype"), [(257, np.uint16), (65535, np.uint16), (65536, np.uint16), (65537, np.uint32)]
)
def test_token_dtype_fits_every_id(vocab_size, dtype):
    assert token_dtype(vocab_size) == dtype
    assert np.iinfo(token_dtype(vocab_size)).max >= vocab_size - 1

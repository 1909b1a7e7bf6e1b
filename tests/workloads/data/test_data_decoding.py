"""Undecodable text is counted while it is read: `replaced_chars` counts each U+FFFD the text source
writes, `check` refuses a file above MAX_REPLACED_FRACTION unless errors: replace is set on purpose, and
the prepared corpus carries the count (the train job logs it as data/replaced_chars)."""

from workloads.data import DataConfig
from workloads.data.pipeline import prepare_corpus
from workloads.data.sources import TextSource, replaced_chars


def test_each_undecodable_sequence_is_one_counted_replacement(tmp_path):
    path = tmp_path / "mixed.txt"
    # utf-8 text with 3 latin-1 bytes (each an invalid sequence on its own) and one legit U+FFFD
    path.write_bytes("ok \ufffd ".encode() + b"caf\xe9 d\xe9j\xe0 vu\n")
    with replaced_chars() as replaced:
        (text,) = TextSource(paths=(str(path),)).documents()
    assert replaced == [3]  # the U+FFFD already in the file is text, not a replacement
    assert text.count("\ufffd") == 4


def test_a_file_over_one_percent_replaced_is_refused_unless_replace_is_set_on_purpose(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes(("a" * 98 + "\xe9\xe9").encode("latin-1"))  # 2 of 100 characters: 2% > 1%
    (field, message), *rest = TextSource(paths=(str(path),)).check()
    assert not rest and field == "paths[0]"
    assert f"{path}: 2 of 100 characters (2.0%) are not valid utf-8" in message
    assert TextSource(paths=(str(path),), errors="replace").check() == []  # on purpose
    assert TextSource(paths=(str(path),), encoding="latin-1").check() == []  # the right encoding


def test_one_percent_is_still_accepted(tmp_path):
    path = tmp_path / "one.txt"
    path.write_bytes(b"a" * 99 + b"\xe9")  # 1 of 100: at the threshold, not above it
    assert TextSource(paths=(str(path),)).check() == []


def test_the_prepared_corpus_records_the_replacements(tmp_path):
    path = tmp_path / "c.txt"
    path.write_bytes(b"".join(b"paragraph %d caf\xe9\n\n" % i for i in range(40)))
    cfg = DataConfig(source=TextSource(paths=(str(path),), unit="paragraph", errors="replace"))
    _, meta = prepare_corpus(cfg, tmp_path / "cache")
    assert meta["replaced_chars"] == 40

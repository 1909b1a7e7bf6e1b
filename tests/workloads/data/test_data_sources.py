import gzip
import hashlib
import os
import re
import sys
import types

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from workloads.data import (
    SOURCES,
    BuiltinSource,
    DataConfig,
    HFSource,
    ParquetSource,
    SourceUnavailableError,
    TextSource,
    make_source,
    prepare,
)
from workloads.data.builtin import module_text


def _digest(documents) -> tuple[int, int, str]:
    h = hashlib.sha256()
    n_docs = n_bytes = 0
    for doc in documents:
        data = doc.encode("utf-8")
        h.update(len(data).to_bytes(8, "little") + data)
        n_docs += 1
        n_bytes += len(data)
    return n_docs, n_bytes, h.hexdigest()


def test_builtin_source_is_deterministic_and_large_enough():
    source = BuiltinSource()
    first = _digest(source.documents())
    assert _digest(source.documents()) == first
    assert source.fingerprint() == BuiltinSource().fingerprint()
    n_docs, n_bytes, _ = first
    # Measured on CPython 3.11.7: 731 modules, 12.1 MB (~3.2M BPE tokens at vocab 8192).
    assert n_docs >= 400
    assert n_bytes >= 5_000_000


def test_builtin_docs_content_keeps_docstrings_and_comments_in_source_order():
    source = (
        '#!/usr/bin/env python\n"""Module doc."""\n\n# first comment\n# continued\nx = "not a docstring"\n'
        '\n\ndef f():\n    """Function doc."""\n    return 1  # trailing note\n'
    )
    expected = "Module doc.\n\nfirst comment continued\n\nFunction doc.\n\ntrailing note"
    assert module_text(source, "docs") == expected
    assert module_text(source, "source") == source
    assert module_text("def broken(:\n", "source") is None
    assert BuiltinSource(content="docs").fingerprint() != BuiltinSource().fingerprint()


def test_text_source_reads_plain_gz_and_globs_in_sorted_order(tmp_path):
    (tmp_path / "b.txt").write_text("second file")
    (tmp_path / "a.txt").write_text("first file")
    with gzip.open(tmp_path / "c.txt.gz", "wt", encoding="utf-8") as f:
        f.write("zipped file ü")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.txt").write_text("nested file")
    (tmp_path / "empty.txt").write_text("  \n")
    patterns = (str(tmp_path / "*.txt"), str(tmp_path / "c.txt.gz"), str(tmp_path / "**/d.txt"))
    source = TextSource(paths=patterns)
    assert list(source.documents()) == ["first file", "second file", "zipped file ü", "nested file"]


def test_text_source_paragraph_unit_splits_on_blank_lines(tmp_path):
    (tmp_path / "p.txt").write_text("one\nline two\n\n\n  \npara two\n\nthree\n")
    with gzip.open(tmp_path / "q.txt.gz", "wt") as f:
        f.write("gz one\n\ngz two")
    source = TextSource(paths=(str(tmp_path / "p.txt"), str(tmp_path / "q.txt.gz")), unit="paragraph")
    assert list(source.documents()) == ["one\nline two", "para two", "three", "gz one", "gz two"]


def test_text_source_errors_and_fingerprint(tmp_path):
    with pytest.raises(ValueError, match="no file matches"):
        list(TextSource(paths=(str(tmp_path / "*.nothing"),)).documents())
    with pytest.raises(ValueError, match="is not a file"):
        TextSource(paths=(str(tmp_path / "missing.txt"),)).fingerprint()
    with pytest.raises(ValueError, match="TextSource.unit must be one of 'file', 'paragraph', got 'line'"):
        TextSource(paths=("x",), unit="line")
    path = tmp_path / "a.txt"
    path.write_text("hello")
    source = TextSource(paths=str(path))  # a single path is accepted
    assert source.paths == (str(path),)
    before = source.fingerprint()
    assert source.fingerprint() == before
    path.write_text("hello, longer")
    assert source.fingerprint() != before
    assert TextSource(paths=str(path), unit="paragraph").fingerprint() != source.fingerprint()


@pytest.mark.parametrize("unit", ["file", "paragraph"])
def test_text_source_decoding_policy_names_file_and_byte_offset(tmp_path, unit):
    """A cp1252 quote (0x92) in utf-8 text: strict refuses naming the file and the byte offset (also in
    paragraph mode, where the line starts later in the file), replace (the default) gives U+FFFD, ignore
    drops it; `check` finds the strict failure before any job runs."""
    path = tmp_path / "dict.txt"
    path.write_bytes(b"first line\n\nit\x92s here\n")  # the bad byte is at offset 14
    strict = TextSource(paths=(str(path),), unit=unit, errors="strict")
    message = f"text source: {path} is not valid utf-8 at byte offset 14 (invalid start byte)"
    with pytest.raises(ValueError, match=re.escape(message)):
        list(strict.documents())
    assert strict.check() == [("paths[0]", message + "; set errors: replace (or the file's encoding)")]
    replaced = "".join(TextSource(paths=(str(path),), unit=unit).documents())
    assert "it\ufffds here" in replaced
    assert "its here" in "".join(TextSource(paths=(str(path),), unit=unit, errors="ignore").documents())
    assert TextSource(paths=(str(path),), errors="replace").check() == []  # replace on purpose: accepted
    (_, refused), *_ = TextSource(paths=(str(path),)).check()  # unset: 1 of 22 characters is over 1%
    assert refused.startswith(f"text source: {path}: 1 of 22 characters (4.5%) are not valid utf-8")
    missing = TextSource(paths=(str(path), str(tmp_path / "nope.txt")), errors="replace")
    assert [field for field, _ in missing.check()] == ["paths[1]"]


def test_parquet_source_streams_text_column_by_row_group(tmp_path):
    texts = [f"row {i}" for i in range(25)] + [None, "", "last"]
    table = pa.table({"id": list(range(len(texts))), "body": texts})
    path = tmp_path / "data.parquet"
    pq.write_table(table, path, row_group_size=10)
    assert pq.ParquetFile(path).num_row_groups == 3
    source = ParquetSource(paths=(str(tmp_path / "*.parquet"),), text_column="body")
    assert list(source.documents()) == [f"row {i}" for i in range(25)] + ["last"]
    with pytest.raises(ValueError, match=r"text_column 'text' is not in .*\['id', 'body'\]"):
        list(ParquetSource(paths=(str(path),)).documents())


def test_hf_source_without_datasets_package_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` raise ImportError
    with pytest.raises(SourceUnavailableError, match=r"needs the `datasets` package.*isosparse\[hf\]"):
        list(HFSource(name="roneneldan/TinyStories").documents())


def test_hf_source_without_network_is_a_clear_error(monkeypatch, tmp_path):
    def load_dataset(*args, **kwargs):
        raise ConnectionError("Couldn't reach the Hugging Face Hub")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    config = DataConfig(source=make_source("hf", name="roneneldan/TinyStories"), vocab_size=300)
    with pytest.raises(SourceUnavailableError, match="'roneneldan/TinyStories'.*is there a network"):
        prepare(config, cache_dir=tmp_path)
    assert os.listdir(tmp_path / "data") == []  # nothing half-built is left in the cache


def test_hf_source_streams_the_text_field(monkeypatch):
    calls = []

    def load_dataset(name, config_name, split, revision, streaming):
        calls.append((name, config_name, split, revision, streaming))
        return iter([{"text": "a"}, {"text": ""}, {"text": "b"}])

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    source = HFSource(name="org/set", split="validation", revision="abc")
    assert list(source.documents()) == ["a", "b"]
    assert calls == [("org/set", None, "validation", "abc", True)]
    assert source.fingerprint() != HFSource(name="org/set", split="validation").fingerprint()


def test_unknown_source_suggests_the_close_name():
    with pytest.raises(ValueError, match=r"^unknown source 'bultin'; did you mean 'builtin'\?$"):
        make_source("bultin")
    with pytest.raises(ValueError, match="unknown source 'zzz'; known: builtin, hf, parquet, text"):
        make_source("zzz")
    with pytest.raises(ValueError, match="unknown option 'pathz' for source 'text'; did you mean 'paths'"):
        make_source("text", pathz=("a",))
    with pytest.raises(ValueError, match="source 'parquet'.*paths"):
        make_source("parquet")
    assert set(SOURCES) == {"builtin", "text", "parquet", "hf"}
    assert make_source("builtin", content="docs") == BuiltinSource(content="docs")

"""A file a source cannot read or decode is named in the error (one bad file among a glob's)."""

import pytest

from workloads.data.sources import ParquetSource, TextSource


def test_undecodable_text_file_is_named(tmp_path):
    (tmp_path / "a.txt").write_text("fine text\n")
    (tmp_path / "b.txt").write_bytes(b"caf\xe9 latin-1, not utf-8\n")
    source = TextSource(paths=(str(tmp_path / "*.txt"),), errors="strict")
    with pytest.raises(ValueError, match=r"text source: .*b\.txt is not valid utf-8 at byte offset 3"):
        list(source.documents())


def test_corrupt_parquet_file_is_named(tmp_path):
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really a parquet file")
    with pytest.raises(ValueError, match=r"parquet source: cannot read .*broken\.parquet"):
        list(ParquetSource(paths=(str(tmp_path / "broken.parquet"),)).documents())

"""Corpus sources: frozen specs that stream documents (str) and name their identity by a sha256 fingerprint.

`SOURCES` maps a source name to its spec class; `make_source("text", paths=(...,))` builds one by name with
did-you-mean errors. Sources: builtin (Python's stdlib), text (local files/globs), parquet, hf (Hub).
"""

import codecs
import contextlib
import difflib
import glob
import gzip
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Annotated, Any, Literal

from workloads.data.builtin import BuiltinSource
from workloads.fields import MinLen, check_fields

REPLACE_HANDLER = "isosparse.count_replace"  # "replace", counting what it replaces (replaced_chars)
MAX_REPLACED_FRACTION = 0.01  # a text file whose characters are more U+FFFD than this is refused


class _Replaced:
    n = 0  # characters replaced by U+FFFD since the process started (read differences, see replaced_chars)


def _count_replace(err: UnicodeDecodeError) -> tuple[str, int]:
    _Replaced.n += 1  # one U+FFFD per undecodable sequence, as "replace" writes it
    return "\ufffd", err.end


codecs.register_error(REPLACE_HANDLER, _count_replace)


@contextlib.contextmanager
def replaced_chars() -> Iterator[list[int]]:
    """Count the characters text sources replace by U+FFFD while the block reads: yields a one-item list
    that holds the count when the block ends (single-threaded readers, as the data pipeline is)."""
    start, out = _Replaced.n, [0]
    try:
        yield out
    finally:
        out[0] = _Replaced.n - start


class SourceUnavailableError(RuntimeError):
    """A source cannot be read here: a missing optional package or no network."""


def _as_paths(kind: str, paths: Any) -> tuple[str, ...]:
    if isinstance(paths, str | os.PathLike):
        paths = (paths,)
    paths = tuple(os.fspath(p) for p in paths)
    if not paths:
        raise ValueError(f"{kind} source: paths must name at least one file or glob, got ()")
    return paths


def resolve_paths(kind: str, patterns: tuple[str, ...]) -> list[Path]:
    """Expand globs (`**` recursive) in the given order, each sorted; every pattern must match a file."""
    found: dict[Path, None] = {}
    for pattern in patterns:
        expanded = os.path.expanduser(pattern)
        if glob.has_magic(expanded):
            matches = [Path(p) for p in sorted(glob.glob(expanded, recursive=True)) if Path(p).is_file()]
            if not matches:
                raise ValueError(f"{kind} source: no file matches {pattern!r}")
        elif Path(expanded).is_file():
            matches = [Path(expanded)]
        else:
            raise ValueError(
                f"{kind} source: {pattern!r} is not a file (directories need a glob: 'dir/*.txt')"
            )
        found.update(dict.fromkeys(p.resolve() for p in matches))
    return list(found)


def _files_fingerprint(kind: str, settings: str, files: list[Path]) -> str:
    """sha256 over the settings and each file's absolute path, size and mtime (ns) — no content is read."""
    h = hashlib.sha256(f"{kind} {settings}\n".encode())
    for path in files:
        stat = path.stat()
        h.update(f"{path} {stat.st_size} {stat.st_mtime_ns}\n".encode())
    return h.hexdigest()


SAMPLE_BYTES = 64 * 2**20  # how much of each text file `check` decodes (whole files up to this size)
Problem = tuple[str, str]  # (field path inside the source, e.g. "paths[1]"; message)


@dataclass(frozen=True)
class TextSource:
    """Local text files or globs, plain or `.gz`; a document is a whole file or a blank-line paragraph.

    unit="file" reads each file whole; for a corpus in one large file use unit="paragraph", which streams
    it line by line and gives the document split something to split (it needs an encoding in which b"\n"
    is a newline: utf-8, latin-1, cp1252, ...). errors: what a byte that does not decode becomes.
    Unset (the default), it becomes U+FFFD, since one stray cp1252 byte in a 40 MB corpus should not fail
    a benchmark, but `check` refuses a file where over MAX_REPLACED_FRACTION of the characters did not
    decode (random bytes, latin-1 read as utf-8), naming the count and the fix. "replace" keeps them on
    purpose; "strict" refuses the file naming it and the byte offset; "ignore" drops it. Replacements
    are counted while reading (`replaced_chars`; the jobs log them as data/replaced_chars).
    """

    paths: Annotated[tuple[str, ...], MinLen(1)]
    unit: Literal["file", "paragraph"] = "file"
    encoding: str = "utf-8"
    errors: Literal["strict", "replace", "ignore"] | None = None  # None: replace, refused above 1%
    kind: Literal["text"] = "text"

    def __post_init__(self) -> None:
        object.__setattr__(self, "paths", _as_paths(self.kind, self.paths))
        check_fields(self)
        try:
            newline = "\n".encode(self.encoding)
        except LookupError as e:
            raise ValueError(f"text source: unknown encoding {self.encoding!r}") from e
        if self.unit == "paragraph" and newline != b"\n":
            raise ValueError(f"text source: unit='paragraph' cannot split {self.encoding!r} text into lines")

    def _open(self, path: Path):
        return gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")

    def _decode(self, data: bytes, path: Path, offset: int, final: bool = True) -> str:
        handler = REPLACE_HANDLER if self.errors in (None, "replace") else self.errors
        decoder = codecs.getincrementaldecoder(self.encoding)(handler)
        try:
            return decoder.decode(data, final=final).replace("\r\n", "\n")  # as universal newlines did
        except UnicodeDecodeError as e:
            where = "decompressed " if path.suffix == ".gz" else ""
            raise ValueError(
                f"text source: {path} is not valid {self.encoding} at {where}byte offset {offset + e.start} "
                f"({e.reason}); set errors: replace (or the file's encoding)"
            ) from None

    def documents(self) -> Iterator[str]:
        for path in resolve_paths(self.kind, self.paths):
            with self._open(path) as f:
                if self.unit == "file":
                    text = self._decode(f.read(), path, 0)
                    if text.strip():
                        yield text
                else:
                    yield from _paragraphs(self._lines(f, path))

    def _lines(self, f, path: Path) -> Iterator[str]:
        offset = 0
        for raw in f:
            yield self._decode(raw, path, offset)
            offset += len(raw)

    def check(self, sample_bytes: int = SAMPLE_BYTES) -> list[Problem]:
        """Every pattern that matches no file, every file with no text, and every file whose first
        `sample_bytes` do not decode (errors="strict") or decode to over MAX_REPLACED_FRACTION U+FFFD
        (errors unset)."""
        problems: list[Problem] = []
        for i, pattern in enumerate(self.paths):
            try:
                files = resolve_paths(self.kind, (pattern,))
            except ValueError as e:
                problems.append((f"paths[{i}]", str(e)))
                continue
            for path in files:
                try:
                    problem = self._check_file(path, sample_bytes)
                except (ValueError, OSError) as e:
                    problem = str(e)
                if problem:
                    problems.append((f"paths[{i}]", problem))
        return problems

    def _check_file(self, path: Path, sample_bytes: int) -> str | None:
        with self._open(path) as f, replaced_chars() as replaced:
            data = f.read(sample_bytes)
            text = self._decode(data, path, 0, final=len(data) < sample_bytes)  # whole file: its end too
        if not text.strip():
            return f"text source: {path} has no text (empty or only whitespace); remove it or add text"
        n = replaced[0]
        if self.errors is None and n > MAX_REPLACED_FRACTION * len(text):
            return (
                f"text source: {path}: {n:,} of {len(text):,} characters ({n / len(text):.1%}) "
                f"are not valid {self.encoding} and would become U+FFFD; set encoding: to the file's "
                "encoding (e.g. latin-1, cp1252), or errors: replace to keep them on purpose"
            )
        return None

    def fingerprint(self) -> str:
        settings = f"unit={self.unit} encoding={self.encoding} errors={self.errors or 'replace'}"
        return _files_fingerprint(self.kind, settings, resolve_paths(self.kind, self.paths))


@contextlib.contextmanager
def _naming(kind: str, path: Path) -> Iterator[None]:
    """A read error of one file re-raised as a ValueError naming the file (pyarrow's ArrowInvalid for a
    corrupt file does not say which of a glob's files is broken)."""
    try:
        yield
    except (OSError, EOFError, ValueError) as err:
        if str(path) in str(err):
            raise
        raise ValueError(f"{kind} source: cannot read {path}: {type(err).__name__}: {err}") from err


def _paragraphs(lines) -> Iterator[str]:
    """Blank-line separated paragraphs of a line stream, read line by line."""
    paragraph: list[str] = []
    for line in lines:
        if line.strip():
            paragraph.append(line)
        elif paragraph:
            yield "".join(paragraph).rstrip("\n")
            paragraph = []
    if paragraph:
        yield "".join(paragraph).rstrip("\n")


@dataclass(frozen=True)
class ParquetSource:
    """Parquet files or globs with a string column; one document per non-empty row, read by row group."""

    paths: Annotated[tuple[str, ...], MinLen(1)]
    text_column: str = "text"
    kind: Literal["parquet"] = "parquet"

    def __post_init__(self) -> None:
        object.__setattr__(self, "paths", _as_paths(self.kind, self.paths))
        check_fields(self)

    def check(self) -> list[Problem]:
        """Every pattern that matches no file or names a file without `text_column` (schema read only)."""
        problems: list[Problem] = []
        for i, pattern in enumerate(self.paths):
            try:
                for path in resolve_paths(self.kind, (pattern,)):
                    import pyarrow.parquet as pq

                    if self.text_column not in (names := pq.read_schema(path).names):
                        raise ValueError(
                            f"parquet source: {path} has no column {self.text_column!r} ({names})"
                        )
            except (ValueError, OSError) as e:
                problems.append((f"paths[{i}]", str(e)))
        return problems

    def documents(self) -> Iterator[str]:
        import pyarrow.parquet as pq

        for path in resolve_paths(self.kind, self.paths):
            with _naming(self.kind, path):
                parquet = pq.ParquetFile(path)
                names = parquet.schema_arrow.names
            if self.text_column not in names:
                raise ValueError(
                    f"parquet source: text_column {self.text_column!r} is not in {path} (columns: {names})"
                )
            for group in range(parquet.num_row_groups):
                with _naming(self.kind, path):
                    column = parquet.read_row_group(group, columns=[self.text_column]).column(0)
                for text in column.to_pylist():
                    if isinstance(text, str) and text.strip():
                        yield text

    def fingerprint(self) -> str:
        settings = f"text_column={self.text_column}"
        return _files_fingerprint(self.kind, settings, resolve_paths(self.kind, self.paths))


@dataclass(frozen=True)
class HFSource:
    """A Hugging Face Hub dataset, streamed; needs the `datasets` package (extra `hf`) and a network.

    The fingerprint is the identity (name, config, split, revision, field) — pin `revision` to a commit
    for reproducible data, since an unpinned one cannot see upstream changes.
    """

    name: Annotated[str, MinLen(1)]  # such as 'roneneldan/TinyStories'
    config_name: str | None = None
    split: str = "train"
    text_field: str = "text"
    revision: str | None = None
    kind: Literal["hf"] = "hf"

    def __post_init__(self) -> None:
        check_fields(self)

    def check(self) -> list[Problem]:
        """Nothing is checked before the job: reaching the Hub needs the network the job will have."""
        return []

    def documents(self) -> Iterator[str]:
        try:
            import datasets
        except ImportError as e:
            raise SourceUnavailableError(
                "hf source needs the `datasets` package, which is not installed: pip install 'isosparse[hf]'"
            ) from e
        try:
            rows = datasets.load_dataset(
                self.name, self.config_name, split=self.split, revision=self.revision, streaming=True
            )
            for row in rows:
                if self.text_field not in row:
                    raise ValueError(
                        f"hf source: text_field {self.text_field!r} not in row keys {sorted(row)}"
                    )
                text = row[self.text_field]
                if isinstance(text, str) and text.strip():
                    yield text
        except OSError as e:  # ConnectionError, offline mode and missing datasets are OSErrors
            raise SourceUnavailableError(
                f"hf source: cannot stream dataset {self.name!r} (split {self.split!r}) from the "
                f"Hugging Face Hub — is there a network? ({type(e).__name__}: {e})"
            ) from e

    def fingerprint(self) -> str:
        identity = f"hf {self.name} {self.config_name} {self.split} {self.revision} {self.text_field}"
        return hashlib.sha256(identity.encode()).hexdigest()


SourceSpec = BuiltinSource | TextSource | ParquetSource | HFSource
SOURCES: dict[str, type[SourceSpec]] = {
    cls.kind: cls for cls in (BuiltinSource, TextSource, ParquetSource, HFSource)
}


def _did_you_mean(name: str, known) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"; did you mean '{close[0]}'?" if close else f"; known: {', '.join(sorted(known))}"


def source_class(name: str) -> type[SourceSpec]:
    """The spec class registered under `name` (exact match only)."""
    if name not in SOURCES:
        raise ValueError(f"unknown source '{name}'{_did_you_mean(name, SOURCES)}")
    return SOURCES[name]


def make_source(kind: str, /, **options: Any) -> SourceSpec:
    """Build a source spec by registry name: `make_source("text", paths=("a/*.txt",), unit="paragraph")`."""
    cls = source_class(kind)
    known = [f.name for f in fields(cls)]
    for option in options:
        if option not in known:
            raise ValueError(f"unknown option '{option}' for source '{kind}'{_did_you_mean(option, known)}")
    try:
        return cls(**options)
    except TypeError as e:  # a required option is missing
        raise ValueError(f"source '{kind}': {e}") from e

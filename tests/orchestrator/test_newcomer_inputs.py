"""A newcomer's bad inputs, each refused by `isosparse validate` with exit 2 and the field or file named,
before anything runs (issue 23's 34 cases: the ones it found and more of the same kinds). Each case
writes its files under tmp_path and gives (arguments after `validate`, environment, texts the message
must contain)."""

import random
import textwrap

import pytest
from typer.testing import CliRunner

from orchestrator.cli.main import app

TRAIN = """
experiment: newcomer
matrix: {{families: [{family}], presets: [debug], jobs: [train]}}
train:
  data: {{source: {source}, seq_len: 16}}
  steps: 2
  batch_size: 2
"""
DUMMY = "matrix: {jobs: [dummy]}\n"


def write(tmp, name: str, text: str) -> str:
    path = tmp / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def train_suite(tmp, source: str, family: str = "dense", extra: str = "") -> str:
    return write(tmp, "suite.yaml", TRAIN.format(source=source, family=family) + extra)


def paragraphs(tmp, name: str, n: int = 60) -> str:
    (tmp / name).write_text("".join(f"paragraph {i}: the quick brown fox.\n\n" for i in range(n)))
    return str(tmp / name)


def c_duplicate_variants(tmp):
    suite = write(tmp, "s.yaml", "matrix: {jobs: [dummy], variants: [{name: older}, {name: older}]}\n")
    return [suite], {}, ["matrix.variants[1].name", "duplicate variant name 'older'"]


def c_store_in_proc(tmp):
    return (
        [write(tmp, "s.yaml", DUMMY), "--tracking-uri", "sqlite:////proc/x.db"],
        {},
        ["/proc", "cannot create"],
    )


def c_store_under_a_file(tmp):
    (tmp / "afile").write_text("x")
    uri = f"sqlite:///{tmp}/afile/x.db"
    return [write(tmp, "s.yaml", DUMMY), "--tracking-uri", uri], {}, [f"{tmp}/afile is a file, not a folder"]


def c_store_in_a_missing_folder(tmp):
    uri = f"sqlite:///{tmp}/no/such/x.db"
    return (
        [write(tmp, "s.yaml", DUMMY), "--tracking-uri", uri],
        {},
        [f"the folder {tmp}/no/such does not exist"],
    )


def c_store_is_a_folder(tmp):
    return [write(tmp, "s.yaml", DUMMY), "--tracking-uri", f"sqlite:///{tmp}"], {}, [f"{tmp} is a folder"]


def c_store_is_not_sqlite(tmp):
    suite = write(tmp, "s.yaml", DUMMY)
    return (
        [suite, "--tracking-uri", f"sqlite:///{suite}"],
        {},
        [f"{suite} exists and is not an sqlite database"],
    )


def c_isosparse_home_is_a_file(tmp):
    (tmp / "home").write_text("x")
    return (
        [write(tmp, "s.yaml", DUMMY)],
        {"ISOSPARSE_HOME": str(tmp / "home")},
        ["ISOSPARSE_HOME", "is a file"],
    )


def c_empty_corpus_file(tmp):
    (tmp / "empty.txt").write_text("")
    suite = train_suite(tmp, f"{{kind: text, paths: [{tmp}/empty.txt]}}")
    return [suite], {}, ["train.data.source.paths[0]", f"{tmp}/empty.txt has no text"]


def c_one_file_corpus_empty_validation_split(tmp):
    (tmp / "one.txt").write_text("hello world. " * 500)
    suite = train_suite(tmp, f"{{kind: text, paths: [{tmp}/one.txt]}}")
    return [suite], {}, ["train.data:", "the val split is empty", "unit: paragraph"]


def c_scone_fgrams_above_supply(tmp):
    corpus = paragraphs(tmp, "small.txt", 200)
    suite = train_suite(tmp, f"{{kind: text, paths: [{corpus}], unit: paragraph}}", family="scone")
    return [suite], {}, ["scone.n_fgrams=1024 exceeds the", "candidate f-grams"]


def c_random_bytes(tmp):
    rng = random.Random(0)
    (tmp / "random.bin").write_bytes(bytes(rng.randrange(256) for _ in range(4000)))
    suite = train_suite(tmp, f"{{kind: text, paths: [{tmp}/random.bin]}}")
    return [suite], {}, [f"{tmp}/random.bin:", "are not valid utf-8", "set encoding:", "errors: replace"]


def c_latin1_without_encoding(tmp):
    (tmp / "latin1.txt").write_bytes(("café déjà vu. " * 300).encode("latin-1"))
    suite = train_suite(tmp, f"{{kind: text, paths: [{tmp}/latin1.txt]}}")
    return [suite], {}, [f"{tmp}/latin1.txt: 900 of 4,200 characters (21.4%)", "latin-1"]


def c_strict_decoding(tmp):
    (tmp / "latin1.txt").write_bytes("ok café".encode("latin-1"))
    suite = train_suite(tmp, f"{{kind: text, paths: [{tmp}/latin1.txt], errors: strict}}")
    return [suite], {}, ["train.data.source.paths[0]", "byte offset 6"]


def c_suite_is_a_directory(tmp):
    return [str(tmp)], {}, [f"{tmp} is a folder"]


def c_missing_suite(tmp):
    return [str(tmp / "nope.yaml")], {}, ["no such suite file"]


def c_missing_tokenizer_path(tmp):
    corpus = paragraphs(tmp, "c.txt")
    source = f"{{kind: text, paths: [{corpus}], unit: paragraph}}, tokenizer_path: {tmp}/tok.json"
    return [train_suite(tmp, source)], {}, ["train.data.tokenizer_path", "tok.json"]


def c_unknown_preset(tmp):
    return (
        [write(tmp, "s.yaml", "matrix: {jobs: [dummy], presets: [tinny]}\n")],
        {},
        ["matrix.presets[0]", "tiny"],
    )


def c_unknown_family(tmp):
    suite = write(tmp, "s.yaml", "matrix: {jobs: [dummy], families: [l4]}\n")
    return [suite], {}, ["matrix.families[0]", "unknown family 'l4'"]


def c_unknown_job_kind(tmp):
    return [write(tmp, "s.yaml", "matrix: {jobs: [trian]}\n")], {}, ["matrix.jobs[0]", "train"]


def c_misspelt_top_level_key(tmp):
    return [write(tmp, "s.yaml", "matrx: {jobs: [dummy]}\n")], {}, ["matrx"]


def c_negative_steps(tmp):
    suite = write(tmp, "s.yaml", "matrix: {jobs: [train]}\ntrain: {steps: -1}\n")
    return [suite], {}, ["train.steps"]


def c_missing_corpus_path(tmp):
    suite = train_suite(tmp, f"{{kind: text, paths: [{tmp}/nope.txt]}}")
    return [suite], {}, ["train.data.source.paths[0]", "nope.txt"]


def c_glob_matching_nothing(tmp):
    suite = train_suite(tmp, f"{{kind: text, paths: ['{tmp}/*.md']}}")
    return [suite], {}, ["train.data.source.paths[0]", "*.md"]


def c_unknown_source_kind(tmp):
    return [train_suite(tmp, "{kind: txt, paths: [a.txt]}")], {}, ["train.data.source", "text"]


def c_unknown_encoding(tmp):
    corpus = paragraphs(tmp, "c.txt")
    return [train_suite(tmp, f"{{kind: text, paths: [{corpus}], encoding: utf-9}}")], {}, ["utf-9"]


def c_val_fraction_above_one(tmp):
    suite = write(tmp, "s.yaml", "matrix: {jobs: [train]}\ntrain: {data: {val_fraction: 1.5}}\n")
    return [suite], {}, ["train.data.val_fraction"]


def c_lr_not_a_number(tmp):
    return [write(tmp, "s.yaml", "matrix: {jobs: [train]}\ntrain: {lr: fast}\n")], {}, ["train.lr"]


def c_variant_name_with_a_space(tmp):
    suite = write(tmp, "s.yaml", "matrix: {jobs: [dummy], variants: [{name: my run}]}\n")
    return [suite], {}, ["matrix.variants[0].name"]


def c_match_tolerance_zero(tmp):
    return [write(tmp, "s.yaml", "match_tolerance: 0\nmatrix: {jobs: [dummy]}\n")], {}, ["match_tolerance"]


def c_seed_not_an_integer(tmp):
    return [write(tmp, "s.yaml", "matrix: {jobs: [dummy], seeds: [a]}\n")], {}, ["matrix.seeds"]


def c_empty_suite_file(tmp):
    return [write(tmp, "s.yaml", "")], {}, ["the file is empty"]


def c_invalid_yaml(tmp):
    return [write(tmp, "s.yaml", "matrix: {jobs: [dummy]\n")], {}, ["not valid YAML"]


def c_set_without_equals(tmp):
    return [write(tmp, "s.yaml", DUMMY), "--set", "train.steps"], {}, ["train.steps"]


def c_missing_cluster_file(tmp):
    return [write(tmp, "s.yaml", DUMMY), "--cluster", f"{tmp}/nope.yaml"], {}, [f"{tmp}/nope.yaml"]


def c_cluster_file_unknown_gpu(tmp):
    cluster = write(
        tmp, "c.yaml", "name: c\nkind: ray\naddress: h:6379\nnodes: [{count: 1, gpu: H900, gpus: 1}]\n"
    )
    return [write(tmp, "s.yaml", DUMMY), "--cluster", cluster], {}, [cluster]


CASES = [value for name, value in sorted(globals().items()) if name.startswith("c_")]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__[2:] for c in CASES])
def test_a_newcomers_bad_input_is_exit_2_at_validate_naming_the_field_or_file(tmp_path, monkeypatch, case):
    monkeypatch.setenv("ISOSPARSE_HOME", str(tmp_path / "iso"))
    monkeypatch.setenv("ISOSPARSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    case_dir = tmp_path / "case"
    case_dir.mkdir()
    args, env, expected = case(case_dir)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    result = CliRunner().invoke(app, ["validate", *args])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for text in expected:
        assert text in result.output, (text, result.output)
    assert not (tmp_path / "iso").exists() or env  # validate creates no store


def test_there_are_at_least_34_cases():
    assert len(CASES) >= 34

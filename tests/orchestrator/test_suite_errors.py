"""Every mistake a user can make in a suite is refused at `validate`/`run`, exit 2, with its exact path and
message, all at once, before Ray or MLflow start. One table: a YAML snippet (+ --set) → the exact errors."""

import textwrap

import pytest
from typer.testing import CliRunner

from orchestrator.cli.main import app
from orchestrator.suites.expansion import SuiteError, load_suite

HEAD = "experiment: t\nmatrix: {jobs: [train], families: [dense], presets: [tiny]}\n"
TWO_VARIANTS = """
experiment: t
matrix:
  jobs: [train]
  families: [dense]
  presets: [tiny]
  variants:
    - {name: a}
    - {name: b, train: {data: {source: {kind: text, paths: ['{tmp}/nope.txt']}}}}
"""
BAD_BYTE = """
experiment: t
matrix: {jobs: [train], families: [dense], presets: [tiny]}
train: {data: {source: {kind: text, paths: ['{tmp}/c.txt'], errors: strict}}}
"""
GE_1 = "Input should be greater than or equal to 1"
NUMBER = "Input should be a valid number, unable to parse string as a number (got 'fast')"

CASES = {  # name: (suite text, --set, {path: message})
    "missing text file": (
        TWO_VARIANTS, [],
        {"matrix.variants[1].train.data.source.paths[0]":
         "text source: '{tmp}/nope.txt' is not a file (directories need a glob: 'dir/*.txt')"},
    ),
    "strict decoding names the file and byte offset": (
        BAD_BYTE, [],
        {"train.data.source.paths[0]": "text source: {tmp}/c.txt is not valid utf-8 at byte offset 11 "
         "(invalid start byte); set errors: replace (or the file's encoding)"},
    ),
    "vocab below the byte-level BPE minimum": (
        HEAD + "model: {overrides: {vocab_size: 200}}\n", [],
        {"model.overrides.vocab_size": "the model's vocab_size=200 is below the byte-level BPE minimum 257 "
         "(256 bytes + 1 special token(s))"},
    ),
    "seq_len over max_seq_len": (
        HEAD + "train: {seq_len: 1024}\n", [], {"train.seq_len": "1024 exceeds the model's max_seq_len=512"},
    ),
    "every field error of a section at once": (
        HEAD + "train: {steps: -5, batch_size: 0}\n", [],
        {"train.steps": "Input should be greater than or equal to 1 (got -5)",
         "train.batch_size": "Input should be greater than or equal to 1 (got 0)"},
    ),
    "--set error at the field's own path": (
        HEAD, ["train.batch_size=0"], {"train.batch_size": GE_1 + " (got 0)"},
    ),
    "L3 placed after a block the preset lacks": (
        "experiment: t\nmatrix: {jobs: [train], families: [dense, l3], presets: [tiny]}\n"
        "model: {overrides: {l3_positions: [0, 6]}}\n", [],
        {"model.overrides.l3_positions":
         "[0, 6] must lie in [0, 6): preset 'tiny' has 6 blocks (position i is the L3 layer after block i)"},
    ),
    "L3 positions out of order": (
        "experiment: t\nmatrix: {jobs: [train], families: [dense, l3], presets: [tiny]}\n"
        "model: {overrides: {l3_positions: [3, 1]}}\n", [],
        {"model.overrides.l3_positions": "Predicate 'strictly_increasing' failed (got [3, 1])"},
    ),
    "override for a family the matrix does not run": (
        HEAD + "model: {overrides: {l3_cap: 64}}\n", [],
        {"model.overrides.l3_cap":
         "applies to family 'l3' or 'moe' or 'hash_moe', which matrix.families lacks"},
    ),
    "unknown source kind": (
        HEAD + "train: {data: {source: {kind: txt}}}\n", [],
        {"train.data.source.kind": "must be one of builtin, text, parquet, hf (got 'txt')"},
    ),
    "unknown key with did-you-mean, wrong type": (
        HEAD + "train: {stesp: 3, lr: fast}\n", [],
        {"train.stesp": "unknown key 'stesp' (did you mean 'steps'?)", "train.lr": NUMBER},
    ),
    "unknown key inside a source": (
        HEAD + "train: {data: {source: {kind: builtin, contnet: docs}}}\n", [],
        {"train.data.source.contnet": "unknown key 'contnet' (did you mean 'content'?)"},
    ),
    "misspelt preset and a bad seed with a bad section": (
        HEAD.replace("[tiny]", "[tinny]").replace("presets", "seeds: [x], presets")
        + "train: {steps: 0}\n", [],
        {"matrix.presets[0]": "unknown preset 'tinny' (did you mean 'tiny'?)",
         "matrix.seeds[0]": "Input should be a valid integer, unable to parse string as an integer (got 'x')",
         "train.steps": "Input should be greater than or equal to 1 (got 0)"},
    ),
    "impossible match": (
        HEAD.replace("[dense]", "[dense, moe]") + "model: {overrides: {moe_ep_size: 7}}\n", [],
        {"model": "preset 'tiny' as moe: moe.num_experts=8 is not divisible by moe.ep_size=7"},
    ),
    "a model field in a job section": (
        HEAD + "train: {preset: small}\n", [],
        {"train.preset": "set by the suite's matrix and model section, not in a job section"},
    ),
    "empty file": ("", [], {"": "the file is empty; a suite needs at least matrix: {jobs: [...]}"}),
}  # fmt: skip


def _write(tmp_path, text: str):
    (tmp_path / "c.txt").write_bytes(b"it\xe2\x80\x99s fine\x92 not")  # a cp1252 quote at byte 11
    path = tmp_path / "suite.yaml"
    path.write_text(textwrap.dedent(text).replace("{tmp}", str(tmp_path)))
    return path


@pytest.mark.parametrize("name", list(CASES))
def test_bad_suite_is_refused_with_exact_paths_and_exit_2(name, tmp_path, monkeypatch):
    text, sets, expected = CASES[name]
    path = _write(tmp_path, text)
    expected = {k: v.replace("{tmp}", str(tmp_path)) for k, v in expected.items()}
    with pytest.raises(SuiteError) as info:
        load_suite(path, sets)
    assert dict(info.value.errors) == expected
    monkeypatch.setenv("ISOSPARSE_HOME", str(tmp_path / "home"))
    set_args = [arg for s in sets for arg in ("--set", s)]
    for command in ("validate", "run"):
        result = CliRunner().invoke(app, [command, str(path), *set_args])
        assert result.exit_code == 2, result.output
        for where, message in expected.items():
            assert (f"  {where}: {message}" if where else f"  {message}") in result.output
    assert not (tmp_path / "home").exists()  # no MLflow store, no run


def test_malformed_yaml_and_missing_file_print_plain_text(tmp_path):
    bad = _write(tmp_path, "matrix: {jobs: [train}\n")
    result = CliRunner().invoke(app, ["validate", str(bad)])
    assert result.exit_code == 2
    assert "expected ',' or ']'" in result.output and "^" in result.output  # no markup ate them
    missing = CliRunner().invoke(app, ["validate", "quickstrat"])
    assert missing.exit_code == 2
    assert "quickstrat: 1 error\n  no such suite file (did you mean 'quickstart'?)" in missing.output


def test_fixed_mistakes_validate(tmp_path):
    """What used to fail in every worker: debug with its defaults; a stray cp1252 byte under the default
    errors policy; a variant that switches its source from builtin to text."""
    from workloads.data.sources import TextSource

    text = """
        experiment: t
        matrix:
          jobs: [train]
          families: [dense]
          variants:
            - {name: stdlib}
            - {name: file, train: {data: {source: {kind: text, paths: ['{tmp}/d.txt'], unit: paragraph}}}}
        train: {data: {source: {kind: builtin, content: docs}}}
        """
    words = ("alpha", "beta", "gamma", "delta", "it\u2019s")
    paragraphs = [" ".join(words[(i + j) % 5] for j in range(i % 7 + 3)) for i in range(300)]
    (tmp_path / "d.txt").write_bytes("\n\n".join(paragraphs).encode() + b" stray \x92 byte")
    suite = load_suite(_write(tmp_path, text))
    sources = {j.labels["variant"]: j.config.data.source for j in suite.jobs}
    assert sources["file"] == TextSource(paths=(str(tmp_path / "d.txt"),), unit="paragraph")
    assert sources["file"].errors is None  # replace; one stray byte is far below the 1% that is refused
    assert [j.labels["preset"] for j in suite.jobs] == ["debug"] * 2


def test_one_problem_of_two_jobs_is_counted_once_naming_both(tmp_path):
    """An empty corpus that the train and the infer job share is one error, with both paths."""
    (tmp_path / "empty.txt").write_text("")
    source = f"{{kind: text, paths: [{tmp_path / 'empty.txt'}]}}"
    suite = _write(
        tmp_path,
        f"matrix: {{jobs: [train, infer], presets: [debug]}}\ntrain: {{data: {{source: {source}}}}}\n"
        f"infer: {{data: {{source: {source}}}}}\n",
    )
    result = CliRunner().invoke(app, ["validate", str(suite)])
    assert result.exit_code == 2, result.output
    lines = result.output.splitlines()
    assert lines[0].endswith(": 1 error"), result.output
    assert lines[1].startswith("  train.data.source.paths[0], infer.data.source.paths[0]: text source: ")
    assert len(lines) == 2

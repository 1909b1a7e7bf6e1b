"""Iso-sparse matching as the suite plans it (L3_SPEC §5): the MoE of a group is matched to the L3 model
that runs there (its l3_* overrides), a plan outside `match_tolerance` is refused with exit 2 before
anything is recorded, and the numbers the jobs measure are the ones the suite planned."""

import textwrap

import pytest
from typer.testing import CliRunner

from orchestrator.cli.main import app
from orchestrator.suites.expansion import SuiteError, load_suite
from workloads.jobs import train
from workloads.jobs.result import JobContext

DUMMY = """
experiment: t
model: {{overrides: {overrides}}}
matrix:
  jobs: [dummy]
  families: [dense, l3, moe]
  presets: [tiny]
"""

TRAIN = """
experiment: m
model: {overrides: {vocab_size: 512}}
train:
  data: {source: {kind: builtin, content: docs}, max_documents: 50, val_fraction: 0.2}
  seq_len: 32
  batch_size: 2
  steps: 1
  eval_batches: 1
  timing_warmup_steps: 0
matrix: {families: [dense, l3, moe], presets: [debug], jobs: [train]}
"""


def write(tmp_path, text: str, name: str = "s.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def _by_family(suite) -> dict:
    return {job.labels["family"]: job.match for job in suite.jobs}


@pytest.mark.parametrize("overrides", ["{l3_cap: 1}", "{l3_tied: true, vocab_size: 259}", "{l3_cap: 2}"])
def test_moe_is_matched_to_the_l3_model_of_its_group(tmp_path, overrides):
    """The l3_* overrides change the L3 model's total; the MoE of the group follows it (before: matched
    to the default-cap L3 model, +128% total error with l3_cap 1)."""
    m = _by_family(load_suite(write(tmp_path, DUMMY.format(overrides=overrides))))
    assert abs(m["moe"]["total_rel_err"]) <= 0.02
    assert abs(m["moe"]["params_total"] / m["l3"]["params_total"] - 1) <= 0.02
    assert abs(m["l3"]["active_rel_err"]) <= 0.02 and abs(m["moe"]["active_rel_err"]) <= 0.02
    default = _by_family(load_suite(write(tmp_path, DUMMY.format(overrides="{}"), "d.yaml")))
    assert m["l3"]["params_total"] != default["l3"]["params_total"]
    assert m["moe"]["estimated"] == 1.0  # a model-free group has no corpus: labelled estimated


def test_a_plan_outside_the_tolerance_is_refused_with_both_numbers(tmp_path, monkeypatch):
    monkeypatch.setenv("ISOSPARSE_HOME", str(tmp_path / "home"))
    path = write(tmp_path, DUMMY.format(overrides="{}") + "match_tolerance: 0.0001\n")
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    messages = [msg for _, msg in info.value.errors]
    assert any(
        msg.startswith("group tiny/base/s0: moe active ")
        and " vs dense " in msg
        and "over the match_tolerance 0.01%" in msg
        for msg in messages
    ), messages
    for args in (["validate", str(path)], ["run", str(path)]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2 and "match_tolerance" in result.output, result.output
    assert not (tmp_path / "home").exists()  # refused before anything was recorded
    assert load_suite(write(tmp_path, DUMMY.format(overrides="{}"), "ok.yaml")).jobs  # default 2%: fine


def test_measured_params_equal_the_planned_ones(tmp_path, monkeypatch):
    """The suite plans on the job's own corpus (tokenizer, LZW allocation, token counts), so each job's
    measured params_active / params_total are exactly the planned match/params_*; and the measured
    iso-active and iso-total errors are within the 2% tolerance."""
    monkeypatch.setenv("ISOSPARSE_CACHE", str(tmp_path / "cache"))  # validation and jobs share it
    suite = load_suite(write(tmp_path, TRAIN))
    measured = {}
    for job in suite.jobs:
        result = train.run(job.config, JobContext())
        m = result.metrics
        assert m["params_active"] == job.match["params_active"], job.name
        assert m["params_total"] == job.match["params_total"], job.name
        assert m["params_active_min"] <= m["params_active"] <= m["params_active_max"]
        measured[job.labels["family"]] = m
    dense = measured["dense"]["params_active"]
    for family in ("l3", "moe"):
        assert abs(measured[family]["params_active"] / dense - 1) <= 0.02, family
    assert abs(measured["moe"]["params_total"] / measured["l3"]["params_total"] - 1) <= 0.02
    # The L3 rows are the corpus-weighted mean, not budget / vocab (4 rows): frequent tokens own more.
    assert "estimated" not in {k for job in suite.jobs for k in job.match}


def test_shipped_moe_capacity_suite_is_matched_and_records_its_knobs():
    """suites/moe-capacity.yaml: cf 1.0 vs 1.25 vs dropless, each MoE within 2% of dense's active and of
    its group's L3 total, with the knobs in the job's resolved model (what the run's params record)."""
    suite = load_suite("suites/moe-capacity.yaml")
    moe = {job.labels["variant"]: job for job in suite.jobs if job.labels["family"] == "moe"}
    assert sorted(moe) == ["cf1.0", "cf1.25", "dropless"]
    for job in moe.values():
        assert abs(job.match["active_rel_err"]) <= 0.02 and abs(job.match["total_rel_err"]) <= 0.02
    knobs = {v: job.resolved["job"]["model"]["moe"] for v, job in moe.items()}
    assert knobs["cf1.25"]["capacity_factor"] == knobs["cf1.25"]["eval_capacity_factor"] == 1.25
    assert knobs["cf1.0"]["drop_tokens"] is True and knobs["dropless"]["drop_tokens"] is False

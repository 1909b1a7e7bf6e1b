"""Suite validation and expansion without Ray: every error at once with paths, --set, fingerprints of what
ships, iso-sparse match errors, the dataclass → plain data → dataclass round trip, and exit 2."""

import textwrap
from dataclasses import replace

import pytest
import yaml
from typer.testing import CliRunner

from orchestrator.cli.main import app
from orchestrator.suites import registry
from orchestrator.suites.expansion import load_suite
from orchestrator.suites.files import SuiteError, shipped_suites
from orchestrator.suites.schema import validate
from workloads.data.config import DataConfig
from workloads.data.sources import TextSource
from workloads.jobs.dummy import DummyJobConfig
from workloads.jobs.result import to_jsonable

DUMMY = """
experiment: t
matrix:
  jobs: [dummy]
  families: [dense, l3, moe]
  presets: [debug]
  variants:
    - {name: a, dummy: {value: 1}}
    - {name: b, dummy: {value: 2}}
dummy: {steps: 2}
"""


def write(tmp_path, text: str, name: str = "s.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def errors_of(path, sets=None) -> dict[str, str]:
    with pytest.raises(SuiteError) as info:
        load_suite(path, sets)
    return dict(info.value.errors)


def test_every_error_is_reported_at_once_with_its_path(tmp_path):
    path = write(tmp_path, """
        experiment: bad
        matrix:
          jobs: [dummy]
          presets: [smal, debug]
          families: [dense, moe]
          seeds: [0, x]
          variants:
            - {name: neg, dummy: {steps: -3}}
            - {name: ep, model: {overrides: {moe_ep_size: 7}}}
        dummy: {stesp: 3, sleep_s: fast}
        """)  # fmt: skip
    errors = errors_of(path)
    assert errors["matrix.presets[0]"] == "unknown preset 'smal' (did you mean 'small'?)"
    assert "integer" in errors["matrix.seeds[1]"]
    assert errors["dummy.stesp"] == "unknown key 'stesp' (did you mean 'steps'?)"
    assert "valid number" in errors["dummy.sleep_s"]
    assert errors["matrix.variants[0].dummy.steps"] == "Input should be greater than or equal to 0 (got -3)"
    assert "not divisible by moe.ep_size=7" in errors["matrix.variants[1].model"]  # impossible match
    assert len(errors) == 6


def test_set_overrides_and_unknown_family(tmp_path):
    path = write(tmp_path, DUMMY)
    errors = errors_of(path, ["matrix.families.1=l4", "dummy.steps=-1", "nonsense"])
    assert errors["matrix.families[1]"] == "unknown family 'l4' (known: dense, l3, moe, scone, hash_moe)"
    assert errors["dummy.steps"] == "Input should be greater than or equal to 0 (got -1)"
    assert "KEY=VALUE" in errors["--set nonsense"]
    suite = load_suite(path, ["dummy.steps=5", "matrix.seeds=[0, 1]"])
    assert {j.config.steps for j in suite.jobs} == {5}
    assert len(suite.jobs) == 3 * 2 * 2  # families × variants × seeds


def test_expansion_labels_fingerprints_and_match_errors(tmp_path):
    suite = load_suite(write(tmp_path, DUMMY))
    assert len(suite.jobs) == 6 and len({j.fingerprint for j in suite.jobs}) == 6
    again = load_suite(write(tmp_path, DUMMY, "other.yaml"))
    assert [j.fingerprint for j in again.jobs] == [j.fingerprint for j in suite.jobs]  # path-independent
    by = {(j.labels["family"], j.labels["variant"]): j for j in suite.jobs}
    assert by["dense", "a"].config == DummyJobConfig(steps=2, value=1.0)
    dense, l3, moe = (by[f, "a"].match for f in ("dense", "l3", "moe"))
    assert dense["active_rel_err"] == 0.0
    assert abs(l3["active_rel_err"]) <= 0.02 and abs(moe["active_rel_err"]) <= 0.02
    assert abs(moe["total_rel_err"]) <= 0.02  # MoE iso-total with the group's L3 model
    assert moe["params_total"] > dense["params_total"]


def test_identical_resolved_jobs_are_kept_once(tmp_path):
    text = DUMMY.replace("{name: b, dummy: {value: 2}}", "{name: b, dummy: {value: 1}}")
    assert len(load_suite(write(tmp_path, text)).jobs) == 3


def test_a_variant_runs_only_the_families_it_names(tmp_path):
    text = DUMMY.replace("{name: b, dummy: {value: 2}}", "{name: b, families: [moe, l3], dummy: {value: 2}}")
    jobs = load_suite(write(tmp_path, text)).jobs
    ran = sorted((j.labels["variant"], j.labels["family"]) for j in jobs)
    assert ran == [("a", "dense"), ("a", "l3"), ("a", "moe"), ("b", "l3"), ("b", "moe")]
    moe_b = next(j for j in jobs if j.labels["variant"] == "b" and j.labels["family"] == "moe")
    assert abs(moe_b.match["total_rel_err"]) <= 0.02  # still matched iso-total with its group's L3
    bad = DUMMY.replace("{name: b, dummy: {value: 2}}", "{name: b, families: [l3, scone]}")
    assert errors_of(write(tmp_path, bad, "bad.yaml")) == {
        "matrix.variants[1].families[1]": "'scone' is not in matrix.families (dense, l3, moe)"
    }


def test_dataclass_round_trip_with_tagged_source():
    cfg = DataConfig(source=TextSource(paths=("a.txt",), unit="paragraph"), seq_len=64)
    plain = to_jsonable(cfg)
    assert plain["source"]["kind"] == "text"
    assert validate(DataConfig, yaml.safe_load(yaml.safe_dump(plain))) == (cfg, [])


def test_shipped_job_config_is_the_fingerprinted_one(tmp_path):
    """The worker gets the resolved config (model included); the fingerprint hashes exactly its data."""
    from orchestrator.suites.fingerprint import code_version, fingerprint

    text = DUMMY.replace("jobs: [dummy]", "jobs: [train, infer]").replace("dummy: {steps: 2}", "")
    text = text.replace("dummy: {value: 1}", "train: {steps: 1}").replace(
        "dummy: {value: 2}", "train: {steps: 2}"
    )
    for job in load_suite(write(tmp_path, text)).jobs:
        assert job.config.model is not None and job.config.model.family == job.labels["family"]
        assert job.resolved == {"kind": job.kind, "job": to_jsonable(job.config), "timing": "exclusive"}
        assert job.fingerprint == fingerprint(job.resolved, code_version())
        if job.kind == "infer":  # resolved before fingerprinting: device, dtype, MoE capacity
            assert (job.config.device, job.config.dtype, job.config.model.dtype) == (
                "cpu",
                "float32",
                "float32",
            )
            if job.config.model.moe is not None:
                assert job.config.model.moe.min_capacity == 1  # capped at the smallest batch size (1)


def test_shipped_suites_validate():
    names = {p.stem for p in shipped_suites()}
    shipped = {"quickstart", "iso-sparse-800m", "ablations", "eval-quick", "downstream", "controls"}
    assert shipped | {"scone-scaling"} <= names
    for path in shipped_suites():
        try:
            suite = load_suite(path)
        except SuiteError as err:  # a job module not there yet is the only acceptable error
            assert all("is not available" in msg for _, msg in err.errors), err
            continue
        assert suite.jobs


def test_l3_optimizers_suite_varies_only_the_table_optimizer_and_fingerprints_it():
    """suites/l3-optimizers.yaml (issue 21): per seed, the AdamW and row-wise jobs differ in l3_optimizer
    alone (and the tuned row-wise one in its tables' lr too), which their resolved (recorded,
    fingerprinted) config carries."""
    (path,) = [p for p in shipped_suites() if p.stem == "l3-optimizers"]
    jobs = {(j.labels["variant"], j.labels["seed"]): j for j in load_suite(path).jobs}
    assert len(jobs) == 9
    for seed in ("0", "1", "2"):
        adamw, rowwise, tuned = (jobs[v, seed] for v in ("adamw", "rowwise", "rowwise_lr1e-2"))
        assert (adamw.config.l3_optimizer, rowwise.config.l3_optimizer) == ("adamw", "rowwise_adagrad")
        assert replace(rowwise.config, l3_optimizer="adamw") == adamw.config
        assert replace(tuned.config, l3_lr=None) == rowwise.config and tuned.config.l3_lr == 1e-2
        assert rowwise.resolved["job"]["l3_optimizer"] == "rowwise_adagrad"
        assert tuned.resolved["job"]["l3_lr"] == 1e-2
        assert len({adamw.fingerprint, rowwise.fingerprint, tuned.fingerprint}) == 3
        assert adamw.config.steps >= 300 and adamw.config.model.family == "l3"


def test_a_job_section_is_validated_once_per_variant_and_each_job_gets_its_own_model_and_seed(monkeypatch):
    """suites/l3-optimizers.yaml: 3 variants × 3 seeds of one family. Each variant's train section is
    validated once (3 validations, not 9); each job's config then carries its own seed and its family's
    matched model spec."""
    from orchestrator.suites import expansion
    from workloads.jobs.train import TrainJobConfig

    validated = []
    monkeypatch.setattr(expansion, "validate", lambda tp, data: validated.append(tp) or validate(tp, data))
    (path,) = [p for p in shipped_suites() if p.stem == "l3-optimizers"]
    jobs = load_suite(path).jobs
    assert validated.count(TrainJobConfig) == 3 and len(jobs) == 9
    assert sorted(j.config.seed for j in jobs) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    for job in jobs:
        assert job.config.seed == int(job.labels["seed"]) == job.resolved["job"]["seed"]
        assert (job.config.family, job.config.preset) == (job.labels["family"], job.labels["preset"])


def test_cli_validate_and_run_exit_2_on_bad_suite_and_create_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("ISOSPARSE_HOME", str(tmp_path / "home"))
    bad = write(tmp_path, DUMMY.replace("presets: [debug]", "presets: [tinny]"))
    runner = CliRunner()
    for args in (["validate", str(bad)], ["run", str(bad)]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        assert "unknown preset 'tinny' (did you mean 'tiny'?)" in result.output
    assert not (tmp_path / "home").exists()  # no store, no run: nothing was created
    ok = runner.invoke(app, ["validate", str(write(tmp_path, DUMMY, "ok.yaml"))])
    assert ok.exit_code == 0 and "6 jobs, valid" in ok.output


def test_run_exits_2_when_the_store_is_unreachable(tmp_path):
    result = CliRunner().invoke(
        app, ["run", str(write(tmp_path, DUMMY)), "--tracking-uri", "http://127.0.0.1:9"]
    )
    assert result.exit_code == 2 and "unreachable" in result.output


def test_cli_list_presets_suites_jobs():
    runner = CliRunner()
    assert "tiny" in runner.invoke(app, ["list", "presets"]).output
    assert "quickstart" in runner.invoke(app, ["list", "suites"]).output
    jobs = runner.invoke(app, ["list", "jobs"]).output
    assert all(kind in jobs for kind in ("train", "infer", "dummy"))
    assert runner.invoke(app, ["list", "gpus"]).exit_code == 2


def test_dict_of_dataclasses_field_is_built():
    from workloads.jobs.train import TrainJobConfig

    data = {"eval_data": {"docs": {"source": {"kind": "builtin", "content": "docs"}, "seq_len": 64}}}
    cfg, errors = validate(TrainJobConfig, {**data, "preset": "debug", "family": "dense"})
    assert errors == [] and cfg.eval_data["docs"].seq_len == 64
    assert isinstance(cfg.eval_data["docs"], DataConfig)


def test_validate_accepts_the_paper_s_allocation(tmp_path):
    path = tmp_path / "paper.yaml"
    path.write_text(
        "experiment: paper\nmodel: {overrides: {l3_allocation: lzw-paper}}\n"
        "matrix: {jobs: [train], families: [dense, l3], presets: [debug]}\n"
        "train: {steps: 2, data: {source: {kind: builtin, content: docs}, max_documents: 300}}\n"
    )
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    l3 = next(j for j in load_suite(path).jobs if j.labels["family"] == "l3")
    assert l3.config.model.l3.allocation == "lzw-paper" and l3.resolved["job"]["model"]["l3"][
        "allocation"
    ] == ("lzw-paper")


def test_a_kind_whose_module_cannot_be_imported_is_unavailable_and_its_suite_says_so(monkeypatch, tmp_path):
    """lm-eval missing, say: the eval kind's module fails to import; a suite using it gets a suite error
    naming the kind and the import error, and every other kind still works."""
    from workloads import kinds

    real = kinds.job_module

    def job_module(kind):
        if kind == "eval":
            raise ImportError("No module named 'lm_eval'")
        return real(kind)

    monkeypatch.setattr(kinds, "job_module", job_module)
    assert not registry.get("eval").available() and registry.get("dummy").available()
    with pytest.raises(ValueError, match="job kind 'eval' is not available: No module named 'lm_eval'"):
        registry.get("eval").load()
    assert registry.get("train").load()[0].__name__ == "TrainJobConfig"
    suite = tmp_path / "evals.yaml"
    suite.write_text("matrix: {jobs: [dummy, eval], families: [dense], presets: [debug]}\n")
    with pytest.raises(SuiteError) as err:
        load_suite(suite)
    missing = "job kind 'eval' is not available: No module named 'lm_eval'"
    assert ("matrix.jobs[1]", missing) in err.value.errors

"""workloads.kinds: each job kind's module, imported on first use (a dummy job's worker loads no torch)."""

import subprocess
import sys

import pytest

from workloads.kinds import job_module


@pytest.mark.parametrize(
    ("kind", "config_class"),
    [
        ("train", "TrainJobConfig"),
        ("infer", "InferJobConfig"),
        ("eval", "EvalJobConfig"),
        ("dummy", "DummyJobConfig"),
    ],
)
def test_job_module_of_each_kind_has_its_config_and_run(kind, config_class):
    module = job_module(kind)
    assert module.__name__.startswith("workloads.jobs.") and callable(module.run)
    assert getattr(module, config_class).__name__ == config_class


def test_job_module_of_an_unknown_kind_is_a_key_error():
    with pytest.raises(KeyError, match="'bench'"):
        job_module("bench")


def test_a_dummy_jobs_module_loads_no_torch():
    code = "import sys; from workloads import kinds; kinds.job_module('dummy'); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

"""The README's cluster example as written: the shipped 800M suite fits the shipped 8xH100 cluster by the
capacity model, `plan` says the setup it sized, and a micro-batch that does not fit gets a proposal."""

from typer.testing import CliRunner

from orchestrator.cli.main import app
from orchestrator.planning import plan as planning
from orchestrator.suites.cluster_file import load_cluster

SUITE, CLUSTER = "suites/iso-sparse-800m.yaml", "clusters/examples/h100x8.yaml"


def test_shipped_suite_fits_the_shipped_cluster_and_plan_says_how():
    result = CliRunner().invoke(app, ["plan", SUITE, "--cluster", CLUSTER])
    assert result.exit_code == 0, result.output
    assert "6 of 6 jobs fit on h100x8" in result.output
    assert "train/l3/paper-800m/base/s0: as set: micro-batch 1 x 64 accumulation, DDP" in result.output


def test_a_micro_batch_that_does_not_fit_gets_a_same_tokens_proposal():
    sets = ["train.batch_size=8", "train.grad_accum=8"]  # the suite's earlier setting: 97-140 GiB
    plans = {p.name: p for p in planning.plan_suite(SUITE, load_cluster(CLUSTER), sets)}
    l3 = plans["train/l3/paper-800m/base/s0"]
    assert not l3.fits and l3.peak_bytes > l3.capacity_bytes
    assert l3.note.endswith("fits with train.batch_size=1, train.grad_accum=64 (same tokens per step)")
    moe = plans["train/moe/paper-800m/base/s0"]
    assert "fits with train.batch_size=2, train.grad_accum=32" in moe.note

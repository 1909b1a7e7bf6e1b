"""The cluster CLI sub-app through typer's CliRunner (registered the way cli.py is meant to)."""

from pathlib import Path

import typer
import yaml
from typer.testing import CliRunner

from orchestrator.cli import clusters as cli_clusters

EXAMPLES = Path(__file__).parents[2] / "clusters" / "examples"
app = typer.Typer()
app.command("plan")(cli_clusters.plan)
app.add_typer(cli_clusters.clusters_app, name="clusters")
runner = CliRunner()


def test_plan_preset():
    result = runner.invoke(app, ["plan", "--preset", "paper-2.6b", "--family", "l3", "--cluster",
                                 str(EXAMPLES / "h100x8.yaml"), "--tokens", "30e9"])  # fmt: skip
    assert result.exit_code == 0, result.output
    for text in ("training memory per GPU", "peak", "fits", "8 × h100-sxm", "step time", "tokens/s",
                 "wall time", "GPU-hours", "cost", "params: l3_tables"):  # fmt: skip
        assert text in result.output


def test_plan_options_and_does_not_fit():
    result = runner.invoke(app, ["plan", "--preset", "paper-2.6b", "--family", "moe", "--cluster",
                                 str(EXAMPLES / "h100x8.yaml"), "--micro-batch", "64", "--zero-stage", "0",
                                 "--no-checkpointing", "--gpus", "1"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "does not fit" in result.output and "ZeRO-0" in result.output


def test_plan_suite_exit_codes(tmp_path):
    ok = runner.invoke(app, ["plan", "quickstart", "--cluster", str(EXAMPLES / "h100x8.yaml")])
    assert ok.exit_code == 0, ok.output
    assert "suite plan" in ok.output and "jobs fit on h100x8" in ok.output
    small = tmp_path / "one.yaml"
    small.write_text("name: one\nkind: ray\naddress: auto\nnodes:\n  - {count: 1, accelerator: l40s, "
                     "gpus_per_node: 1, cpus_per_node: 8, memory_gib: 64}\n")  # fmt: skip
    bad = runner.invoke(app, ["plan", "iso-sparse-800m", "--cluster", str(small)])
    assert bad.exit_code == 1 and "NO" in bad.output


def test_bad_input_exits_2(tmp_path):
    assert (
        runner.invoke(app, ["plan", "--preset", "smal", "--cluster", str(EXAMPLES / "h100x8.yaml")]).exit_code
        == 2
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nkind: ray\n")
    result = runner.invoke(app, ["clusters", "show", str(bad)])
    assert result.exit_code == 2 and "address: required" in result.output
    assert runner.invoke(app, ["plan", "--cluster", str(EXAMPLES / "h100x8.yaml")]).exit_code == 2


def test_clusters_show():
    result = runner.invoke(app, ["clusters", "show", str(EXAMPLES / "ray.yaml")])
    assert result.exit_code == 0, result.output
    for text in ("a100-ray", "a100-80gb", "ray://10.0.0.10:10001", "total GPUs: 16", "$1.80 per GPU-hour"):
        assert text in result.output


def test_clusters_kuberay_stdout_and_file(tmp_path):
    result = runner.invoke(app, ["clusters", "kuberay", str(EXAMPLES / "kuberay.yaml")])
    assert result.exit_code == 0
    assert yaml.safe_load(result.output)["kind"] == "RayCluster"
    out = tmp_path / "job.yaml"
    result = runner.invoke(app, ["clusters", "kuberay", str(EXAMPLES / "kuberay.yaml"), "--suite",
                                 "suites/quickstart.yaml", "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0 and "RayJob" in result.output
    doc = yaml.safe_load(out.read_text())
    assert doc["spec"]["entrypoint"] == "isosparse run suites/quickstart.yaml --address auto"
    wrong = runner.invoke(app, ["clusters", "kuberay", str(EXAMPLES / "h100x8.yaml")])
    assert wrong.exit_code == 2 and "need 'kuberay'" in wrong.output

"""The GPU check: its dry run passes end to end in a process where the packages absent from the GPU image
cannot be imported, and its pieces (catalog reader, allocation, sync counter) give exact results."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from workloads.gpu_check import catalog, report
from workloads.gpu_check.lookup_checks import zipf_counts
from workloads.gpu_check.model_checks import SyncCounter

ROOT = Path(__file__).resolve().parents[2]
# Not on the GPU image (DESIGN.md "GPU machines"), plus the project's non-workloads packages.
BLOCKED = ["ray", "mlflow", "deepspeed", "pydantic", "annotated_types", "pandas", "typer", "rich", "yaml",
           "tokenizers", "numba", "pyarrow", "clusters", "orchestrator", "results"]  # fmt: skip

# A finder that makes every blocked module fail to import; `find_spec` probes still see a module (as
# torch's optional-dependency checks expect a spec or None, never an exception).
RUNNER = textwrap.dedent(
    """
    import importlib.machinery, runpy, sys
    BLOCKED = set(sys.argv[1].split(","))
    class Refuse:
        def create_module(self, spec):
            raise ImportError(f"{spec.name} is not on the GPU image")
        def exec_module(self, module):
            raise ImportError(f"{module.__name__} is not on the GPU image")
    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                return importlib.machinery.ModuleSpec(name, Refuse())
            return None
    sys.meta_path.insert(0, Blocker())
    sys.argv = ["gpu_check", "--out", sys.argv[2], "--dry-run"]
    runpy.run_module("workloads.gpu_check", run_name="__main__")
    """
)


def test_dry_run_passes_without_the_packages_the_gpu_image_lacks(tmp_path):
    env = {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER, ",".join(BLOCKED), str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert result["dry_run"] is True and any("MoE skipped" in n for n in result["notes"])
    sections = result["sections"]
    assert set(sections) == set(report.COLUMNS)
    for name, section in sections.items():
        assert "rows" in section, f"{name}: {section.get('error') or section.get('skipped')}"
    correctness = sections["correctness"]["rows"]
    assert {(r["impl"], r["dtype"], r["tied"]) for r in correctness} >= {
        ("triton", "float32", False), ("triton", "bfloat16", True), ("sorted", "float32", True)
    }  # fmt: skip
    assert all(r["ok"] for r in correctness)
    assert all(r["repeatable"] for r in correctness if r["impl"] != "triton-atomics")
    assert {r["impl"] for r in correctness} >= {"sorted", "triton", "triton-atomics"}
    assert [r["batch"] for r in sections["decode"]["rows"]] == [1, 8, 64]
    assert [r["model"] for r in sections["train_step"]["rows"]] == ["dense", "l3/sorted", "l3/triton"]
    for name in ("bandwidth", "train_step", "decode"):  # no timing claims in a dry run
        for row in sections[name]["rows"]:
            assert all(row[k] is None for k in row if k in report.TIMING_FIELDS)
    syncs = {r["model"]: r for r in sections["host_syncs"]["rows"]}
    assert syncs["dense"]["fwd_bwd"] == 0 and syncs["l3/triton"]["fwd_bwd"] == 0  # no host reads at all
    assert "[correctness]" in proc.stdout and "[host_syncs]" in proc.stdout


def test_catalog_reader_agrees_with_the_yaml_loader():
    from clusters import catalog as yaml_catalog

    entries = catalog.read_catalog()
    assert set(entries) == set(yaml_catalog.names())
    for key, entry in entries.items():
        acc = yaml_catalog.get(key)
        assert entry["hbm_bytes_per_s"] == acc.hbm_bytes_per_s
        assert entry["device_names"] == list(acc.device_names)
    assert catalog.hbm_peak("NVIDIA H100 80GB HBM3") == ("h100-sxm", 3.35e12)
    assert catalog.hbm_peak("nvidia h200") == ("h200", 4.8e12)
    assert catalog.hbm_peak("Some Unknown GPU") == (None, None)


@pytest.mark.parametrize("vocab, budget, cap", [(10, 10, 4), (10, 40, 4), (100, 700, 512), (7, 23, 5)])
def test_zipf_counts_fill_the_budget_within_the_cap(vocab, budget, cap):
    counts = zipf_counts(vocab, budget, cap)
    assert counts.shape == (vocab,) and int(counts.sum()) == budget
    assert counts.min() >= 1 and counts.max() <= cap
    with pytest.raises(ValueError, match="budget 41"):
        zipf_counts(10, 41, 4)
    assert np.array_equal(zipf_counts(4, 10, 4), [4, 3, 2, 1])  # nonincreasing: frequent ids, most rows


def test_sync_counter_counts_host_reads_on_cpu():
    t = torch.arange(4)
    with SyncCounter("cpu") as counter:
        t.sum().item()
        t.tolist()
        bool(t[0])
        t + 1  # no read
    assert counter.count == 3
    assert torch.Tensor.item.__name__ == "item"  # restored


def test_blank_timings_and_table():
    rows = report.blank_timings(
        [{"model": "dense", "tokens_per_s": 5.0, "median_step_s": 1.0, "vs_dense": 1.0}]
    )
    assert rows == [{"model": "dense", "tokens_per_s": None, "median_step_s": None, "vs_dense": None}]
    text = report.table("train_step", rows).splitlines()
    assert text[0].split() == ["model", "median_step_s", "tokens_per_s", "vs_dense"]
    assert text[2].split() == ["dense", "-", "-", "-"]

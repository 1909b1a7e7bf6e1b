"""Cluster files: the shipped examples load, and bad files report every error with its path."""

from pathlib import Path

import pytest
import yaml

from clusters import catalog
from clusters.spec import GIB
from orchestrator.suites.cluster_file import load_cluster, parse_cluster

EXAMPLES = Path(__file__).parents[2] / "clusters" / "examples"
CPU_NODE = {"count": 1, "accelerator": "cpu", "gpus_per_node": 0, "cpus_per_node": 2, "memory_gib": 4}


@pytest.mark.parametrize("name", ["local", "ray", "kuberay", "h100x8"])
def test_examples_load(name):
    cluster = load_cluster(EXAMPLES / f"{name}.yaml")
    assert cluster.kind in ("local", "ray", "kuberay") and cluster.nodes


def test_h100x8():
    c = load_cluster(EXAMPLES / "h100x8.yaml")
    assert (c.kind, c.address, c.total_gpus, c.accelerator.name) == ("ray", "auto", 8, "h100-sxm")
    assert c.nodes[0].memory_bytes == 2048 * GIB
    r = c.resources_for(4)
    assert (r.num_workers, r.num_gpus, r.num_cpus, r.accelerator_type) == (4, 1.0, 12.0, "H100")
    assert c.resources_for(0).num_gpus == 0
    with pytest.raises(ValueError, match="has 8 GPUs; a job cannot use 9"):
        c.resources_for(9)


def test_ray_cluster_gpu_group_and_cpu_pool():
    c = load_cluster(EXAMPLES / "ray.yaml")
    assert c.total_gpus == 16 and c.gpu_group.name == "gpu" and c.accelerator.name == "a100-80gb"
    assert c.resources_for(2).memory_bytes == 100 * GIB


def test_kuberay_defaults_address_to_head_service():
    c = load_cluster(EXAMPLES / "kuberay.yaml")
    assert c.address == "ray://isosparse-h100-head-svc.isosparse.svc.cluster.local:10001"
    assert (c.nodes[0].min_count, c.nodes[0].count, c.nodes[0].max_count) == (0, 2, 4)
    assert dict(c.nodes[0].node_selector) == {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}


def test_local_reads_the_machine():
    c = parse_cluster({"name": "local", "kind": "local"})
    node = c.nodes[0]
    assert c.address is None and node.accelerator == "cpu" and node.gpus_per_node == 0
    assert node.cpus_per_node >= 1 and node.memory_bytes > GIB
    c = parse_cluster({"name": "box", "kind": "local", "accelerator": "l40s", "gpus": 2, "memory_gib": 64})
    assert (c.total_gpus, c.nodes[0].memory_bytes) == (2, 64 * GIB)


def test_all_errors_reported_at_once_with_paths():
    raw = {
        "name": "Bad Name",
        "kind": "ray",
        "pricee": 3,
        "nodes": [
            {"count": -1, "accelerator": "h100", "gpus_per_node": 8, "cpus_per_node": 8, "memory_gib": 1},
            {
                "count": 1,
                "accelerator": "cpu",
                "gpus_per_node": 2,
                "cpus_per_node": 0,
                "memory_gib": 1,
                "x": 1,
            },
        ],
    }
    with pytest.raises(ValueError) as info:
        parse_cluster(raw, "bad.yaml")
    text = str(info.value)
    known = "name, description, price_per_gpu_hour, interconnect_bytes_per_s, job, kind, address, nodes"
    assert text.splitlines() == [
        "invalid cluster file bad.yaml:",
        "  name: String should match pattern '^[a-z0-9-]+$' (got 'Bad Name')",
        "  address: required",
        "  nodes[0].count: Input should be greater than or equal to 0 (got -1)",
        "  nodes[0].accelerator: unknown accelerator 'h100'; did you mean 'h100-sxm'? (known: "
        + ", ".join(catalog.catalog())
        + ")",
        "  nodes[1].cpus_per_node: Input should be greater than or equal to 1 (got 0)",
        "  nodes[1].x: unknown key 'x' (known: name, count, min_count, max_count, accelerator, "
        "gpus_per_node, cpus_per_node, memory_gib, node_selector, tolerations)",
        f"  pricee: unknown key 'pricee' (known: {known})",
    ]  # all at once; no follow-on error from the unknown accelerator (nodes[0].gpus_per_node)


@pytest.mark.parametrize(
    "raw,message",
    [
        ({"kind": "slurm"}, "kind: must be one of"),
        ({"name": "k", "kind": "kuberay", "nodes": []}, "nodes: List should have at least 1 item"),
        ({"name": "k", "kind": "kuberay", "nodes": [CPU_NODE]}, "image: required\n  ray_version: required"),
        ({"name": "r", "kind": "ray", "address": "a", "nodes": [{**CPU_NODE, "gpus_per_node": 2}]},
         r"nodes\[0\]: gpus_per_node must be 0 exactly when accelerator is 'cpu', got 2"),
        ({"name": "l", "kind": "local", "accelerator": "cpu", "gpus": 1}, "gpus: must be 0 exactly when"),
        ({"name": "r", "kind": "ray", "address": "auto", "nodes": [{**CPU_NODE, "count": 2, "max_count": 1}]},
         "min_count <= count"),
    ],
)  # fmt: skip
def test_specific_errors(raw, message):
    with pytest.raises(ValueError, match=message):
        parse_cluster(raw)


def test_load_cluster_file_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_cluster(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_cluster(bad)
    ok = tmp_path / "ok.yaml"
    node = {"count": 1, "accelerator": "h200", "gpus_per_node": 4, "cpus_per_node": 32, "memory_gib": 256}
    ok.write_text(yaml.safe_dump({"name": "x", "kind": "ray", "address": "h:6379", "nodes": [node]}))
    assert load_cluster(ok).accelerator.name == "h200"

"""KubeRay manifests: parse the YAML back and check the fields the ray.io/v1 CRDs require."""

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from clusters import kuberay
from clusters.spec import TIMING_RESOURCE
from orchestrator.suites.cluster_file import load_cluster

EXAMPLES = Path(__file__).parents[2] / "clusters" / "examples"
DNS_1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@pytest.fixture
def cluster():
    return load_cluster(EXAMPLES / "kuberay.yaml")


def _ray_start_resources(params: dict) -> dict:
    """What `ray start` gets from rayStartParams.resources: KubeRay appends `--resources=VALUE` to the
    container's shell command, so the shell's word splitting decides what Ray parses as JSON."""
    (word,) = shlex.split(f"--resources={params['resources']}")
    return json.loads(word.removeprefix("--resources="))


def _check_raycluster_spec(spec, cluster):
    assert spec["rayVersion"] == "2.60.0"
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0" and "resources" not in head["rayStartParams"]  # no jobs
    (head_container,) = head["template"]["spec"]["containers"]
    assert head_container["image"] == cluster.image
    assert {p["containerPort"] for p in head_container["ports"]} == {6379, 8265, 10001}
    assert "nvidia.com/gpu" not in head_container["resources"]["limits"]
    workers = spec["workerGroupSpecs"]
    assert [w["groupName"] for w in workers] == [g.name for g in cluster.nodes]
    for w, group in zip(workers, cluster.nodes, strict=True):
        assert (w["replicas"], w["minReplicas"], w["maxReplicas"]) == (2, 0, 4)
        assert _ray_start_resources(w["rayStartParams"]) == {TIMING_RESOURCE: 1}  # timed work runs alone
        (container,) = w["template"]["spec"]["containers"]
        res = container["resources"]
        assert (
            res["limits"]["nvidia.com/gpu"] == res["requests"]["nvidia.com/gpu"] == group.gpus_per_node == 8
        )
        assert res["limits"]["cpu"] == "200" and res["limits"]["memory"] == "1600Gi"
        assert container["image"] == cluster.image
        assert {"name": "MLFLOW_TRACKING_URI", "value": cluster.tracking_uri} in container["env"]
        assert w["template"]["spec"]["nodeSelector"] == {
            "cloud.google.com/gke-accelerator": "nvidia-h100-80gb"
        }
        assert w["template"]["spec"]["tolerations"] == [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        ]
    assert spec["enableInTreeAutoscaling"] is True


def test_raycluster_manifest(cluster):
    (doc,) = list(yaml.safe_load_all(kuberay.manifests_yaml(cluster)))
    assert (doc["apiVersion"], doc["kind"]) == ("ray.io/v1", "RayCluster")
    assert doc["metadata"] == {"name": "isosparse-h100", "namespace": "isosparse",
                               "labels": {"app.kubernetes.io/part-of": "isosparse"}}  # fmt: skip
    assert DNS_1123.match(doc["metadata"]["name"])
    _check_raycluster_spec(doc["spec"], cluster)


def test_rayjob_manifest(cluster):
    (doc,) = list(yaml.safe_load_all(kuberay.manifests_yaml(cluster, "suites/iso-sparse-800m.yaml")))
    assert (doc["apiVersion"], doc["kind"]) == ("ray.io/v1", "RayJob")
    assert doc["metadata"]["name"] == "isosparse-h100-iso-sparse-800m"
    assert DNS_1123.match(doc["metadata"]["name"]) and len(doc["metadata"]["name"]) <= 63
    spec = doc["spec"]
    assert spec["entrypoint"] == "isosparse run suites/iso-sparse-800m.yaml --address auto"  # its own cluster
    assert spec["shutdownAfterJobFinishes"] is True and spec["submissionMode"] == "K8sJobMode"
    _check_raycluster_spec(spec["rayClusterSpec"], cluster)


def test_fixed_size_pool_has_no_autoscaler(cluster):
    from dataclasses import replace

    fixed = replace(
        cluster, nodes=tuple(replace(g, min_count=g.count, max_count=g.count) for g in cluster.nodes)
    )
    assert "enableInTreeAutoscaling" not in kuberay.raycluster_spec(fixed)


def test_only_kuberay_clusters(cluster):
    with pytest.raises(ValueError, match="KubeRay manifests need 'kuberay'"):
        kuberay.raycluster_manifest(load_cluster(EXAMPLES / "h100x8.yaml"))
    with pytest.raises(ValueError, match="suite must be a path"):
        kuberay.rayjob_manifest(cluster, "my suite.yaml")

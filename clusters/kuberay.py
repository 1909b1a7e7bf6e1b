"""KubeRay manifests from a `kuberay` cluster file: a `RayCluster` and, for a suite, a `RayJob` (ray.io/v1).
Details: docs/clusters.md#clusterskuberay."""

import json
from typing import Any

import yaml

from clusters.spec import GIB, TIMING_RESOURCE, Cluster, NodeGroup

API_VERSION = "ray.io/v1"
HEAD_PORTS = (("gcs-server", 6379), ("dashboard", 8265), ("client", 10001))


def _quantity_gib(n_bytes: int) -> str:
    """Kubernetes memory quantity in whole Gi (rounded down, at least 1Gi)."""
    return f"{max(1, n_bytes // GIB)}Gi"


def _env(cluster: Cluster) -> list[dict[str, str]]:
    return [{"name": "MLFLOW_TRACKING_URI", "value": cluster.tracking_uri}] if cluster.tracking_uri else []


def _container(cluster: Cluster, name: str, resources: dict[str, Any], ports=()) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": name,
        "image": cluster.image,
        "resources": {"limits": dict(resources), "requests": dict(resources)},
        # KubeRay sends SIGTERM to the container; `ray stop` lets the raylet drain before the pod goes.
        "lifecycle": {"preStop": {"exec": {"command": ["/bin/sh", "-c", "ray stop"]}}},
    }
    if ports:
        container["ports"] = [{"name": port_name, "containerPort": port} for port_name, port in ports]
    env = _env(cluster)
    if env:
        container["env"] = env
    return container


def _resources_param(resources: dict[str, int]) -> str:
    """rayStartParams.resources: KubeRay pastes the value into the `ray start --resources=...` shell line,
    so the JSON goes in double quotes with its own quotes escaped (KubeRay's rayStartParams guide:
    '"{\\"Custom1\\": 1}"')."""
    return '"' + json.dumps(resources).replace('"', '\\"') + '"'


def _head_group(cluster: Cluster) -> dict[str, Any]:
    head = cluster.head
    pod_spec: dict[str, Any] = {
        "containers": [
            _container(
                cluster,
                "ray-head",
                {"cpu": str(head.cpus), "memory": _quantity_gib(head.memory_bytes)},
                HEAD_PORTS,
            )
        ]
    }
    if head.node_selector:
        pod_spec["nodeSelector"] = dict(head.node_selector)
    return {
        # num-cpus 0: no jobs are scheduled on the head, which only runs GCS, the dashboard and drivers.
        "rayStartParams": {"dashboard-host": "0.0.0.0", "num-cpus": "0"},
        "template": {"spec": pod_spec},
    }


def _worker_group(cluster: Cluster, group: NodeGroup) -> dict[str, Any]:
    resources: dict[str, Any] = {"cpu": str(group.cpus_per_node), "memory": _quantity_gib(group.memory_bytes)}
    if group.gpus_per_node:
        resources["nvidia.com/gpu"] = group.gpus_per_node
    pod_spec: dict[str, Any] = {"containers": [_container(cluster, "ray-worker", resources)]}
    if group.node_selector:
        pod_spec["nodeSelector"] = dict(group.node_selector)
    if group.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in group.tolerations]
    return {
        "groupName": group.name,
        "replicas": group.count,
        "minReplicas": group.min_count,
        "maxReplicas": group.max_count,
        # Ray reads the GPU count from the nvidia.com/gpu limit and detects the accelerator type itself.
        "rayStartParams": {"resources": _resources_param({TIMING_RESOURCE: 1})},
        "template": {"spec": pod_spec},
    }


def raycluster_spec(cluster: Cluster) -> dict[str, Any]:
    """The `spec` of a RayCluster (also a RayJob's `rayClusterSpec`)."""
    if cluster.kind != "kuberay":
        raise ValueError(
            f"cluster {cluster.name!r} has kind {cluster.kind!r}; KubeRay manifests need 'kuberay'"
        )
    autoscale = any(g.min_count != g.max_count for g in cluster.nodes)
    spec: dict[str, Any] = {
        "rayVersion": cluster.ray_version,
        "headGroupSpec": _head_group(cluster),
        "workerGroupSpecs": [_worker_group(cluster, g) for g in cluster.nodes],
    }
    if autoscale:
        spec["enableInTreeAutoscaling"] = True
    return spec


def _metadata(cluster: Cluster, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": cluster.namespace,
        "labels": {"app.kubernetes.io/part-of": "isosparse"},
    }


def raycluster_manifest(cluster: Cluster) -> dict[str, Any]:
    """A RayCluster custom resource for `cluster` (a long-lived cluster that `run --cluster` connects to)."""
    return {
        "apiVersion": API_VERSION,
        "kind": "RayCluster",
        "metadata": _metadata(cluster, cluster.name),
        "spec": raycluster_spec(cluster),
    }


def _job_name(cluster: Cluster, suite: str) -> str:
    stem = suite.rsplit("/", 1)[-1].removesuffix(".yaml").removesuffix(".yml").lower()
    slug = "".join(c if c.isalnum() else "-" for c in stem).strip("-")
    return f"{cluster.name}-{slug}"[:63].rstrip("-")


def rayjob_manifest(cluster: Cluster, suite: str, *, ttl_seconds_after_finished: int = 600) -> dict[str, Any]:
    """A RayJob that creates the cluster, runs `isosparse run SUITE` on it and deletes it afterwards.

    SUITE is a path inside the image (e.g. suites/iso-sparse-800m.yaml). Ray gives a job's driver its
    cluster in RAY_ADDRESS; `--address auto` makes the entrypoint attach to it (or to the head pod's
    current cluster) and fail rather than start a GPU-less local cluster if neither is there.
    """
    if not suite or any(c.isspace() for c in suite):
        raise ValueError(f"suite must be a path without whitespace, got {suite!r}")
    return {
        "apiVersion": API_VERSION,
        "kind": "RayJob",
        "metadata": _metadata(cluster, _job_name(cluster, suite)),
        "spec": {
            "entrypoint": f"isosparse run {suite} --address auto",
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": ttl_seconds_after_finished,
            "submissionMode": "K8sJobMode",
            "rayClusterSpec": raycluster_spec(cluster),
        },
    }


def manifests_yaml(cluster: Cluster, suite: str | None = None) -> str:
    """The RayCluster manifest, or the RayJob for `suite`, as YAML (multi-document when both are wanted)."""
    docs = [rayjob_manifest(cluster, suite)] if suite else [raycluster_manifest(cluster)]
    return yaml.safe_dump_all(docs, sort_keys=False)

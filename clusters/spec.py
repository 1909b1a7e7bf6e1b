"""Cluster files (`clusters/examples/*.yaml`): where jobs run, validated into a frozen `Cluster`.

Three kinds share one shape (node groups of `count` nodes × `gpus_per_node` GPUs of a catalog type):
  local    this machine: CPUs and memory read from the OS; `accelerator`/`gpus` as given ("auto" asks
           nvidia-smi). Ray starts in-process.
  ray      an existing Ray cluster at `address` ("auto", "host:6379" or "ray://host:10001").
  kuberay  node pools for a KubeRay RayCluster that `clusters.kuberay` writes (image, namespace, head).
`load_cluster(path)` reports every problem at once, each with its path and value
("nodes[0].gpus_per_node: must be an integer >= 0, got -1").
"""

import contextlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from clusters import catalog

Kind = Literal["local", "ray", "kuberay"]
KINDS: tuple[str, ...] = ("local", "ray", "kuberay")
GIB = 1 << 30
EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"

_COMMON = {"name", "kind", "description", "price_per_gpu_hour", "interconnect_bytes_per_s", "job"}
_TOP = {
    "local": _COMMON | {"accelerator", "gpus", "cpus", "memory_gib"},
    "ray": _COMMON | {"address", "nodes"},
    "kuberay": _COMMON | {"address", "nodes", "namespace", "image", "ray_version", "head", "tracking_uri"},
}
_NODE = {"name", "count", "min_count", "max_count", "accelerator", "gpus_per_node", "cpus_per_node",
         "memory_gib", "node_selector", "tolerations"}  # fmt: skip
_JOB = {"cpus_per_gpu", "cpus_per_cpu_job", "memory_gib_per_gpu"}
_HEAD = {"cpus", "memory_gib", "node_selector"}


@dataclass(frozen=True)
class NodeGroup:
    """`count` identical nodes (a KubeRay worker group; min/max_count bound its autoscaling)."""

    name: str
    count: int
    accelerator: str  # catalog name; "cpu" for CPU-only nodes
    gpus_per_node: int
    cpus_per_node: int
    memory_bytes: int
    min_count: int
    max_count: int
    node_selector: tuple[tuple[str, str], ...] = ()
    tolerations: tuple[tuple[tuple[str, str], ...], ...] = ()

    @property
    def gpus(self) -> int:
        return self.count * self.gpus_per_node


@dataclass(frozen=True)
class HeadSpec:
    """The KubeRay head pod (it runs no GPU work)."""

    cpus: int = 4
    memory_bytes: int = 16 * GIB
    node_selector: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class JobDefaults:
    """Resources per job worker: CPUs per GPU (GPU jobs), CPUs of a CPU-only job, host memory per GPU."""

    cpus_per_gpu: float = 4.0
    cpus_per_cpu_job: float = 1.0
    memory_bytes_per_gpu: int | None = None


@dataclass(frozen=True)
class WorkerResources:
    """What one worker of a job asks Ray for (the orchestrator maps it onto its `Resources`)."""

    num_workers: int
    num_cpus: float
    num_gpus: float
    memory_bytes: int | None
    accelerator_type: str | None  # Ray's accelerator_type label, None for CPU jobs


@dataclass(frozen=True)
class Cluster:
    name: str
    kind: Kind
    nodes: tuple[NodeGroup, ...]
    address: str | None = None  # None: start Ray in-process (local)
    description: str = ""
    price_per_gpu_hour: float | None = None  # USD
    interconnect_bytes_per_s: float | None = None  # inter-node bandwidth per GPU, one direction
    job: JobDefaults = JobDefaults()
    namespace: str = "default"
    image: str | None = None
    ray_version: str | None = None
    head: HeadSpec = HeadSpec()
    tracking_uri: str | None = None

    @property
    def total_gpus(self) -> int:
        return sum(g.gpus for g in self.nodes)

    @property
    def gpu_group(self) -> NodeGroup | None:
        """The node group with the most GPUs (what `plan` sizes jobs against); None if CPU-only."""
        groups = [g for g in self.nodes if g.gpus_per_node > 0]
        return max(groups, key=lambda g: g.gpus) if groups else None

    @property
    def accelerator(self) -> catalog.Accelerator:
        group = self.gpu_group
        return catalog.get(group.accelerator if group else "cpu")

    def resources_for(self, n_devices: int) -> WorkerResources:
        """Ray resources of a job using `n_devices` GPUs (one worker each), or one CPU worker when 0."""
        if n_devices < 0:
            raise ValueError(f"n_devices must be >= 0, got {n_devices}")
        group = self.gpu_group
        if n_devices == 0:
            return WorkerResources(1, self.job.cpus_per_cpu_job, 0.0, None, None)
        if group is None or n_devices > self.total_gpus:
            raise ValueError(
                f"cluster {self.name!r} has {self.total_gpus} GPUs; a job cannot use {n_devices}"
            )
        acc = catalog.get(group.accelerator)
        return WorkerResources(
            n_devices, self.job.cpus_per_gpu, 1.0, self.job.memory_bytes_per_gpu, acc.ray_accelerator_type
        )


class _Errors:
    """Collects "path: message, got value" lines so that a file's problems are reported together."""

    def __init__(self, source: str):
        self.source, self.lines = source, []

    def add(self, path: str, message: str, value: Any = ...) -> None:
        self.lines.append(f"{path}: {message}" + ("" if value is ... else f", got {value!r}"))

    def keys(self, path: str, raw: Any, allowed: set[str], required: set[str] = frozenset()) -> dict:
        if not isinstance(raw, dict):
            self.add(path or "<top>", "must be a mapping", raw)
            return {}
        for key in sorted(set(raw) - allowed, key=str):
            self.add(f"{path}.{key}".lstrip("."), f"unknown field (allowed: {', '.join(sorted(allowed))})")
        for key in sorted(required - set(raw)):
            self.add(f"{path}.{key}".lstrip("."), "is required")
        return raw

    def raise_if_any(self) -> None:
        if self.lines:
            raise ValueError(f"invalid cluster file {self.source}:\n  " + "\n  ".join(self.lines))


def _num(err: _Errors, path: str, value: Any, *, integer: bool, minimum: float, default: Any = None) -> Any:
    if value is None:
        return default
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value) if not integer else int(value)
    ok = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok or value < minimum:
        err.add(path, f"must be {'an integer' if integer else 'a number'} >= {minimum:g}", value)
        return default
    return value if integer else float(value)


def _accelerator(err: _Errors, path: str, value: Any) -> str | None:
    """The catalog name, or None (error recorded) so that checks depending on it are skipped."""
    try:
        return catalog.get(value).name
    except (ValueError, TypeError) as exc:
        err.add(path, str(exc))
        return None


def _str_map(err: _Errors, path: str, value: Any) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        err.add(path, "must be a mapping of strings", value)
        return ()
    return tuple((str(k), str(v)) for k, v in value.items())


def _node_group(err: _Errors, path: str, raw: Any, index: int) -> NodeGroup:
    raw = err.keys(path, raw, _NODE, {"count", "accelerator", "gpus_per_node", "cpus_per_node", "memory_gib"})
    count = _num(err, f"{path}.count", raw.get("count"), integer=True, minimum=0, default=0)
    acc = _accelerator(err, f"{path}.accelerator", raw.get("accelerator", "cpu"))
    gpus = _num(err, f"{path}.gpus_per_node", raw.get("gpus_per_node"), integer=True, minimum=0, default=0)
    if acc == "cpu" and gpus:
        err.add(f"{path}.gpus_per_node", "must be 0 for accelerator 'cpu'", gpus)
    if acc not in (None, "cpu") and "gpus_per_node" in raw and not gpus:
        err.add(f"{path}.gpus_per_node", f"must be >= 1 for accelerator {acc!r}", gpus)
    tolerations = raw.get("tolerations") or []
    if not isinstance(tolerations, list) or not all(isinstance(t, dict) for t in tolerations):
        err.add(f"{path}.tolerations", "must be a list of mappings", tolerations)
        tolerations = []
    min_count = _num(err, f"{path}.min_count", raw.get("min_count"), integer=True, minimum=0, default=count)
    max_count = _num(err, f"{path}.max_count", raw.get("max_count"), integer=True, minimum=0, default=count)
    if not min_count <= count <= max_count:
        err.add(f"{path}", f"needs min_count <= count <= max_count, got {min_count}, {count}, {max_count}")
    memory = _num(err, f"{path}.memory_gib", raw.get("memory_gib"), integer=False, minimum=0, default=0)
    return NodeGroup(
        name=str(raw.get("name", f"group{index}")),
        count=count,
        accelerator=acc or "cpu",
        gpus_per_node=gpus,
        cpus_per_node=_num(
            err, f"{path}.cpus_per_node", raw.get("cpus_per_node"), integer=True, minimum=1, default=1
        ),  # fmt: skip
        memory_bytes=int(memory * GIB),
        min_count=min_count,
        max_count=max_count,
        node_selector=_str_map(err, f"{path}.node_selector", raw.get("node_selector")),
        tolerations=tuple(tuple((str(k), str(v)) for k, v in t.items()) for t in tolerations),
    )


def host_memory_bytes() -> int:
    """Physical memory of this machine (POSIX sysconf; no psutil needed)."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def detect_gpus() -> tuple[str, int]:
    """(catalog name, count) of this machine's NVIDIA GPUs via nvidia-smi; ("cpu", 0) when there are none."""
    if shutil.which("nvidia-smi") is None:
        return "cpu", 0
    out = subprocess.run(
        ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
        capture_output=True,
        text=True,
        check=False,
    )
    gpu_names = [line.strip() for line in out.stdout.splitlines() if line.strip()]
    if out.returncode != 0 or not gpu_names:
        return "cpu", 0
    return catalog.identify(gpu_names[0]), len(gpu_names)


def _local_nodes(err: _Errors, raw: dict) -> tuple[NodeGroup, ...]:
    acc, gpus = (
        raw.get("accelerator", "cpu"),
        raw.get("gpus", "auto" if raw.get("accelerator") == "auto" else 0),
    )
    if acc == "auto" or gpus == "auto":
        detected, n_detected = detect_gpus()
        acc = detected if acc == "auto" else acc
        gpus = n_detected if gpus == "auto" else gpus
    acc = _accelerator(err, "accelerator", acc)
    gpus = _num(err, "gpus", gpus, integer=True, minimum=0, default=0)
    if acc is not None and (acc == "cpu") != (gpus == 0):
        err.add("gpus", f"must be 0 exactly when accelerator is 'cpu' (accelerator {acc!r})", gpus)
    cpus = _num(err, "cpus", raw.get("cpus"), integer=True, minimum=1, default=os.cpu_count() or 1)
    memory = _num(err, "memory_gib", raw.get("memory_gib"), integer=False, minimum=0, default=None)
    memory_bytes = host_memory_bytes() if memory is None else int(memory * GIB)
    return (NodeGroup("local", 1, acc or "cpu", gpus, cpus, memory_bytes, 1, 1),)


def _job(err: _Errors, raw: Any) -> JobDefaults:
    if raw is None:
        return JobDefaults()
    raw = err.keys("job", raw, _JOB)
    per_gpu = _num(err, "job.memory_gib_per_gpu", raw.get("memory_gib_per_gpu"), integer=False, minimum=0)
    return JobDefaults(
        cpus_per_gpu=_num(
            err, "job.cpus_per_gpu", raw.get("cpus_per_gpu"), integer=False, minimum=0, default=4.0
        ),
        cpus_per_cpu_job=_num(
            err, "job.cpus_per_cpu_job", raw.get("cpus_per_cpu_job"), integer=False, minimum=0, default=1.0
        ),  # fmt: skip
        memory_bytes_per_gpu=None if per_gpu is None else int(per_gpu * GIB),
    )


def _kuberay_fields(err: _Errors, raw: dict) -> dict[str, Any]:
    head_raw = err.keys("head", raw.get("head", {}), _HEAD)
    head = HeadSpec(
        cpus=_num(err, "head.cpus", head_raw.get("cpus"), integer=True, minimum=1, default=4),
        memory_bytes=int(
            _num(err, "head.memory_gib", head_raw.get("memory_gib"), integer=False, minimum=1, default=16)
            * GIB
        ),  # fmt: skip
        node_selector=_str_map(err, "head.node_selector", head_raw.get("node_selector")),
    )
    for key in ("image", "ray_version"):
        if not isinstance(raw.get(key), str) or not raw.get(key):
            err.add(key, "is required for kind 'kuberay' (a non-empty string)", raw.get(key))
    namespace = raw.get("namespace", "default")
    name = str(raw.get("name", ""))
    return {
        "namespace": str(namespace),
        "image": raw.get("image"),
        "ray_version": str(raw.get("ray_version")),
        "head": head,
        "tracking_uri": raw.get("tracking_uri"),
        # A RayCluster named N serves Ray Client on the head service N-head-svc, port 10001.
        "address": raw.get("address") or f"ray://{name}-head-svc.{namespace}.svc.cluster.local:10001",
    }


def parse_cluster(raw: Any, source: str = "<cluster>") -> Cluster:
    """Validate a parsed cluster file (a dict) into a `Cluster`; every error is reported at once."""
    err = _Errors(source)
    kind = raw.get("kind") if isinstance(raw, dict) else None
    if kind not in KINDS:
        err.add("kind", f"must be one of {KINDS}", kind)
        err.raise_if_any()
    raw = err.keys("", raw, _TOP[kind], {"name", "kind"} | ({"nodes"} if kind != "local" else set()))
    name = raw.get("name")
    if not isinstance(name, str) or not name.replace("-", "").isalnum() or name != name.lower():
        err.add("name", "must be lower-case letters, digits and '-' (it names Kubernetes objects)", name)
    extra: dict[str, Any] = {}
    if kind == "local":
        nodes = _local_nodes(err, raw)
    else:
        raw_nodes = raw.get("nodes")
        if not isinstance(raw_nodes, list) or not raw_nodes:
            err.add("nodes", "must be a non-empty list of node groups", raw_nodes)
            raw_nodes = []
        nodes = tuple(_node_group(err, f"nodes[{i}]", n, i) for i, n in enumerate(raw_nodes))
        if kind == "ray":
            address = raw.get("address")
            if not isinstance(address, str) or not address:
                err.add(
                    "address",
                    "is required for kind 'ray' ('auto', 'host:6379' or 'ray://host:10001')",
                    address,
                )
            extra["address"] = address
        else:
            extra.update(_kuberay_fields(err, raw))
    groups = [g.name for g in nodes]
    if len(set(groups)) != len(groups):
        err.add("nodes", "group names must be unique", groups)
    price = _num(err, "price_per_gpu_hour", raw.get("price_per_gpu_hour"), integer=False, minimum=0)
    link = _num(
        err, "interconnect_bytes_per_s", raw.get("interconnect_bytes_per_s"), integer=False, minimum=0
    )
    job = _job(err, raw.get("job"))
    err.raise_if_any()
    return Cluster(
        name=name, kind=kind, nodes=nodes, description=str(raw.get("description", "")),
        price_per_gpu_hour=price, interconnect_bytes_per_s=link, job=job, **extra,
    )  # fmt: skip


def load_cluster(path: str | Path) -> Cluster:
    """Read and validate a cluster YAML file: a path, or the name of a shipped example ("local",
    "h100x8" → clusters/examples/<name>.yaml), so the default works from any working directory."""
    path = Path(path)
    if not path.is_file() and (EXAMPLES_DIR / f"{path}.yaml").is_file():
        path = EXAMPLES_DIR / f"{path}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in EXAMPLES_DIR.glob("*.yaml")))
        raise ValueError(f"cluster file {str(path)!r} does not exist (shipped examples: {known})")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"cluster file {path} is not valid YAML: {exc}") from exc
    return parse_cluster(raw, str(path))

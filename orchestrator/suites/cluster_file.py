"""Cluster files (`clusters/examples/*.yaml`) validated with pydantic into `clusters.spec.Cluster`.
Details: docs/orchestrator.md#orchestratorsuitescluster_file.
"""

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, Field, field_validator, model_validator

from clusters import catalog
from clusters.spec import (
    EXAMPLES_DIR,
    GIB,
    Cluster,
    HeadSpec,
    JobDefaults,
    NodeGroup,
    detect_gpus,
    host_memory_bytes,
)
from orchestrator.suites.schema import FORBID, format_loc, validate

StrMap = dict[str, str]


class _File(BaseModel):
    model_config = FORBID


def _accelerator(name: str) -> str:
    """The catalog name; ValueError "unknown accelerator 'h100'; did you mean 'h100-sxm'?"."""
    return catalog.get(name).name


class NodeGroupFile(_File):
    name: str | None = None
    count: int = Field(ge=0)
    min_count: int | None = Field(None, ge=0)
    max_count: int | None = Field(None, ge=0)
    accelerator: str
    gpus_per_node: int = Field(ge=0)
    cpus_per_node: int = Field(ge=1)
    memory_gib: float = Field(ge=0)
    node_selector: StrMap = {}
    tolerations: list[StrMap] = []

    @field_validator("accelerator")
    @classmethod
    def _known(cls, name: str) -> str:
        return _accelerator(name)

    @model_validator(mode="after")
    def _consistent(self) -> "NodeGroupFile":
        if (self.accelerator == "cpu") != (self.gpus_per_node == 0):
            raise ValueError(
                f"gpus_per_node must be 0 exactly when accelerator is 'cpu', got {self.gpus_per_node}"
            )
        low, high = self.min_count, self.max_count
        if not (self.count if low is None else low) <= self.count <= (self.count if high is None else high):
            raise ValueError(f"needs min_count <= count <= max_count, got {low}, {self.count}, {high}")
        return self

    def group(self, index: int) -> NodeGroup:
        count = self.count
        return NodeGroup(
            self.name or f"group{index}",
            count,
            self.accelerator,
            self.gpus_per_node,
            self.cpus_per_node,
            int(self.memory_gib * GIB),
            count if self.min_count is None else self.min_count,
            count if self.max_count is None else self.max_count,
            tuple(self.node_selector.items()),
            tuple(tuple(t.items()) for t in self.tolerations),
        )


class JobFile(_File):
    cpus_per_gpu: float = Field(4.0, ge=0)
    cpus_per_cpu_job: float = Field(1.0, ge=0)
    memory_gib_per_gpu: float | None = Field(None, ge=0)

    def defaults(self) -> JobDefaults:
        per_gpu = None if self.memory_gib_per_gpu is None else int(self.memory_gib_per_gpu * GIB)
        return JobDefaults(self.cpus_per_gpu, self.cpus_per_cpu_job, per_gpu)


class HeadFile(_File):
    cpus: int = Field(4, ge=1)
    memory_gib: float = Field(16, ge=1)
    node_selector: StrMap = {}


class _ClusterFile(_File):
    name: str = Field(pattern=r"^[a-z0-9-]+$")  # it names Kubernetes objects
    description: str = ""
    price_per_gpu_hour: float | None = Field(None, ge=0)  # USD
    interconnect_bytes_per_s: float | None = Field(None, ge=0)
    job: JobFile = JobFile()

    def common(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "description": self.description,
            "job": self.job.defaults(),
            "price_per_gpu_hour": self.price_per_gpu_hour,
            "interconnect_bytes_per_s": self.interconnect_bytes_per_s,
        }


class LocalFile(_ClusterFile):
    """This machine: CPUs and memory from the OS unless given; accelerator/gpus "auto" ask nvidia-smi."""

    kind: Literal["local"]
    accelerator: str = "cpu"
    gpus: Annotated[int, Field(ge=0)] | Literal["auto"] | None = None
    cpus: int | None = Field(None, ge=1)
    memory_gib: float | None = Field(None, ge=0)

    def cluster(self) -> Cluster:
        acc, gpus = self.accelerator, self.gpus
        gpus = gpus if gpus is not None else ("auto" if acc == "auto" else 0)
        if "auto" in (acc, gpus):
            detected, n_detected = detect_gpus()
            acc, gpus = (detected if acc == "auto" else acc), (n_detected if gpus == "auto" else gpus)
        acc = _accelerator(acc)
        if (acc == "cpu") != (gpus == 0):
            raise ValueError(
                f"gpus: must be 0 exactly when accelerator is 'cpu' (accelerator {acc!r}), got {gpus}"
            )
        memory = host_memory_bytes() if self.memory_gib is None else int(self.memory_gib * GIB)
        node = NodeGroup("local", 1, acc, gpus, self.cpus or os.cpu_count() or 1, memory, 1, 1)
        return Cluster(nodes=(node,), **self.common())


class RayFile(_ClusterFile):
    """An existing Ray cluster at `address` ("auto", "host:6379" or "ray://host:10001")."""

    kind: Literal["ray"]
    address: str = Field(min_length=1)
    nodes: list[NodeGroupFile] = Field(min_length=1)

    @field_validator("nodes")
    @classmethod
    def _unique(cls, nodes: list[NodeGroupFile]) -> list[NodeGroupFile]:
        names = [n.name or f"group{i}" for i, n in enumerate(nodes)]
        if len(set(names)) != len(names):
            raise ValueError(f"group names must be unique, got {names}")
        return nodes

    def cluster(self) -> Cluster:
        nodes = tuple(n.group(i) for i, n in enumerate(self.nodes))
        return Cluster(nodes=nodes, address=self.address, **self.common())


class KubeRayFile(RayFile):
    """Node pools for the KubeRay RayCluster that `clusters.kuberay` writes."""

    kind: Literal["kuberay"]
    address: str | None = None  # default: the head service's Ray Client port
    namespace: str = "default"
    image: str = Field(min_length=1)
    ray_version: str = Field(min_length=1)
    head: HeadFile = HeadFile()
    tracking_uri: str | None = None

    def cluster(self) -> Cluster:
        head = HeadSpec(
            self.head.cpus, int(self.head.memory_gib * GIB), tuple(self.head.node_selector.items())
        )
        # A RayCluster named N serves Ray Client on the head service N-head-svc, port 10001.
        address = self.address or f"ray://{self.name}-head-svc.{self.namespace}.svc.cluster.local:10001"
        nodes = tuple(n.group(i) for i, n in enumerate(self.nodes))
        return Cluster(
            nodes=nodes,
            address=address,
            namespace=self.namespace,
            image=self.image,
            ray_version=self.ray_version,
            head=head,
            tracking_uri=self.tracking_uri,
            **self.common(),
        )


KINDS = {"local": LocalFile, "ray": RayFile, "kuberay": KubeRayFile}


def parse_cluster(raw: Any, source: str = "<cluster>") -> Cluster:
    """A parsed cluster file (a dict) → `Cluster`; ValueError listing every problem with its path."""
    kind = raw.get("kind") if isinstance(raw, dict) else None
    if kind not in KINDS:
        raise ValueError(
            f"invalid cluster file {source}:\n  kind: must be one of {tuple(KINDS)}, got {kind!r}"
        )
    model, problems = validate(KINDS[kind], raw)
    if model is not None:
        try:
            return model.cluster()
        except ValueError as e:
            problems = [((), str(e))]
    lines = [f"{format_loc(loc)}: {msg}" if loc else msg for loc, msg in problems]
    raise ValueError(f"invalid cluster file {source}:\n  " + "\n  ".join(lines))


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

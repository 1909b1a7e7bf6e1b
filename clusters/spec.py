"""Cluster files (`clusters/examples/*.yaml`): where jobs run, validated into a frozen `Cluster`.
Details: docs/clusters.md#clustersspec."""

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from clusters import catalog

Kind = Literal["local", "ray", "kuberay"]
KINDS: tuple[str, ...] = ("local", "ray", "kuberay")
GIB = 1 << 30
EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
# The Ray custom resource of which every worker node declares one unit: a job whose timed work must run
# alone on its node holds it whole (orchestrator.runs.timing); local clusters and KubeRay workers declare it.
TIMING_RESOURCE = "isosparse_timing"


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

"""What the suite expands into and the scheduler consumes: `Resources`, `JobSpec`, outcome classes.

Plain frozen dataclasses without ray or mlflow, so validation and tests need neither.
"""

from dataclasses import dataclass, field, replace
from typing import Any, Literal

from clusters.spec import Cluster
from results import names

Outcome = Literal[names.OUTCOMES]  # the failure classes, named once in results.names
Placement = Literal["PACK", "STRICT_PACK", "SPREAD", "STRICT_SPREAD"]
# How a job's timed phases share its node (orchestrator.runs.timing: a Ray resource):
# "exclusive": nothing else of isosparse runs on the node meanwhile; "shared": anything may (its speed
# numbers are marked contended); "interleaved": exclusive, and the comparison group's jobs of this kind
# run in one process whose timed loops alternate (the benchmark's way; ratios from one process).
Timing = Literal["exclusive", "shared", "interleaved"]
TIMINGS: tuple[str, ...] = ("exclusive", "shared", "interleaved")


@dataclass(frozen=True)
class Resources:
    """What one job asks Ray for. num_workers > 1 runs the job as a Ray Train TorchTrainer gang of that
    many workers (each with num_cpus / num_gpus / memory_bytes); placement is its placement-group
    strategy (STRICT_PACK keeps an expert-parallel group on one node). Validated once, where the suite
    gives it (`schema.ResourcesModel`), or built from a validated `clusters.spec.Cluster`."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    memory_bytes: int | None = None
    num_workers: int = 1
    placement: Placement = "PACK"


@dataclass(frozen=True)
class JobSpec:
    """One expanded job of a suite.

    name: readable and unique within the suite ("train/l3/tiny/base/s0").
    config: the job's frozen config dataclass, resolved once by the suite (its `model` set; the infer
        job's device and dtype fixed), handed as is to `run(cfg, ctx)` in the worker.
    resolved: {"kind", "job": `to_jsonable(config)`} (+ labels and seed for model-free kinds, + num_workers
        when > 1): what the fingerprint hashes and what MLflow records as params (results.names.PARAM_*)
        and config.yaml.
    labels: family, preset, variant, seed, group (the comparison group: jobs matched to each other).
    match: iso-sparse accounting within the group, logged as "match/<key>" metrics: params_active,
        params_total (from the config; L3 rows at budget / vocab), active_rel_err (vs the group's dense
        model), total_rel_err (MoE vs the group's L3 model).
    after: the fingerprint of the job this one runs after and reads the checkpoint folder of (an eval job:
        its train job's final weights); the scheduler holds it until that job finished and cancels it when
        that job did not. None: no dependency.
    requested_fingerprint: the suite's fingerprint when the job runs another config (`with_config`).
    """

    name: str
    kind: str
    config: Any
    resolved: dict[str, Any]
    fingerprint: str
    labels: dict[str, str]
    resources: Resources = field(default_factory=Resources)
    max_retries: int = 1
    match: dict[str, float] = field(default_factory=dict)
    after: str | None = None
    timing: Timing = "shared"
    requested_fingerprint: str | None = None

    def with_config(self, config: Any) -> "JobSpec":
        """The same job running another config (an OOM retry's halved micro-batch): its resolved form and
        fingerprint follow the config, so the run records what ran; `requested_fingerprint` keeps the
        suite's, under which a rerun finds the job finished."""
        from orchestrator.suites.fingerprint import code_version, fingerprint
        from workloads import api as workloads

        resolved = {**self.resolved, "job": workloads.to_jsonable(config)}
        requested = self.requested_fingerprint or self.fingerprint
        return replace(
            self,
            config=config,
            resolved=resolved,
            requested_fingerprint=requested,
            fingerprint=fingerprint(resolved, code_version()),
        )


def cluster_resources(cluster: Cluster, resources: Resources) -> Resources:
    """A suite job's resources on `cluster` (`run --cluster`): its num_workers GPU workers with the
    cluster's CPUs and host memory per GPU, or one CPU worker on a CPU-only cluster."""
    wanted = resources.num_workers if resources.num_gpus > 0 or cluster.gpu_group is not None else 0
    worker = cluster.resources_for(wanted)
    return Resources(
        num_cpus=worker.num_cpus,
        num_gpus=worker.num_gpus,
        memory_bytes=worker.memory_bytes or resources.memory_bytes,
        num_workers=worker.num_workers,
        placement=resources.placement,
    )

"""The job registry: job kind name → how the suite and the scheduler treat it; its module (config dataclass,
`run(cfg, ctx)`) comes from `workloads.kinds.job_module`.

Modules are imported lazily (`JobKind.module`), so the orchestrator works, and suites of the kinds that
exist validate, even while a job module cannot be imported; using such a kind is a suite error.
"""

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from workloads import kinds

MODEL_FIELDS = ("preset", "family", "overrides", "allocation_path")


@dataclass(frozen=True)
class JobKind:
    """name: the suite's key (`train`, ...), which names its module in `workloads.kinds.job_module`, where
    `<config_class>` and `run(cfg, ctx)` live.

    uses_model: the config has the `ModelSpec` fields (MODEL_FIELDS: preset, family, overrides,
    allocation_path), set from the matrix's family and preset and the suite's model section;
    seed_field: the config field the matrix seed goes to (None: the seed is a label only).
    fresh_process: run each attempt in a new worker process (Ray reuses workers otherwise), so that
    process-lifetime measurements — peak RSS, CUDA peak memory, allocator caches — are the job's own.
    timing: the default of the suite's `timing.<kind>` (suites.spec.Timing): "exclusive" for kinds
    whose speed numbers are reported, "shared" for those that report none.
    interleave: the module's `run_interleaved(configs, ctxs) -> [BenchResult]` times several jobs of one
    comparison group in one process (needed for `timing: interleaved`).
    """

    name: str
    config_class: str
    description: str
    uses_model: bool = True
    seed_field: str | None = "seed"
    fresh_process: bool = True
    timing: str = "exclusive"
    interleave: bool = False

    def module(self) -> ModuleType:
        """The kind's workloads module; ValueError naming the kind when it cannot be imported."""
        try:
            return kinds.job_module(self.name)
        except ImportError as e:
            raise ValueError(f"job kind {self.name!r} is not available: {e}") from e

    def load(self) -> tuple[type, Callable[..., Any]]:
        """(config dataclass, run function); ValueError naming the kind when its module is missing."""
        mod = self.module()
        return getattr(mod, self.config_class), mod.run

    def resolve(self, config: Any, cuda: bool, model: Any = None) -> Any:
        """The config as the worker will run it: the module's `resolve(config, cuda=, model=)` (as is without
        one). cuda: whether the job is given GPUs; model: the resolved ModelConfig of a model job (matched
        in its comparison group). Raises the module's FieldError / ValueError."""
        resolve = getattr(self.module(), "resolve", None)
        if resolve is None:
            return config
        return resolve(config, cuda=cuda) if model is None else resolve(config, cuda=cuda, model=model)

    def available(self) -> bool:
        try:
            self.load()
        except ValueError:
            return False
        return True


JOBS: dict[str, JobKind] = {
    "train": JobKind(
        "train",
        "TrainJobConfig",
        "train a model (dense / l3 / moe / scone) and evaluate it; throughput, memory, balance, val loss",
    ),
    "infer": JobKind(
        "infer",
        "InferJobConfig",
        "prefill / decode throughput over batch sizes (L3 tables / SCONE table F on device or offloaded)",
        interleave=True,
    ),
    "eval": JobKind(
        "eval",
        "EvalJobConfig",
        "downstream tasks through lm-evaluation-harness on its group's train job's final weights",
        timing="shared",  # it measures quality, no speed: it may share the machine
    ),
    "dummy": JobKind(
        "dummy",
        "DummyJobConfig",
        "model-free job that sleeps / fails / crashes on request (tests the pipeline)",
        uses_model=False,
        seed_field=None,
        fresh_process=False,
        timing="shared",
        interleave=True,
    ),
}


def did_you_mean(name: str, known) -> str:
    """ "; did you mean 'x'?" for the closest known name, else the list of known names."""
    close = difflib.get_close_matches(str(name), list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(known)})"


def planned(kind: str, match: dict) -> dict:
    """What to show of a job's planned accounting (match/...): nothing for a model-free job (dummy), which
    has no parameters although its group's families are sized (the matcher's cheap test case)."""
    return match if kind not in JOBS or JOBS[kind].uses_model else {}


def get(name: str) -> JobKind:
    if name not in JOBS:
        raise ValueError(f"unknown job kind {name!r}{did_you_mean(name, JOBS)}")
    return JOBS[name]

"""The job modules by kind, the orchestrator's third door into workloads (`job_module`). Light on purpose:
each module is imported on first use, so a dummy job's worker never loads torch and a train job's never
loads lm-eval, and the imports are static, so the import contracts see them."""

from types import ModuleType


def job_module(kind: str) -> ModuleType:
    """The module of job kind `kind` (a suite's key): its config dataclass, `run(cfg, ctx)` and, where it has
    them, `resolve` and `run_interleaved`. ImportError when the module's own imports fail, KeyError for an
    unknown kind."""
    if kind == "train":
        from workloads.jobs import train as module
    elif kind == "infer":
        from workloads.jobs import infer as module
    elif kind == "eval":
        from workloads.jobs import evaluate as module
    elif kind == "dummy":
        from workloads.jobs import dummy as module
    else:
        raise KeyError(f"no job module for kind {kind!r}")
    return module

"""What a job hands back (`BenchResult`) and what it is handed (`JobContext`).

Metric keys are the MLflow names of DESIGN.md ("train/tokens_per_s", "mem/peak_device_bytes", ...);
`BenchResult.metrics` is flat and holds floats only, so the orchestrator logs it without interpretation.
"""

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, is_dataclass
from typing import Any

# (metrics, step) -> None; step metrics streamed while the job runs.
MetricsCallback = Callable[[Mapping[str, float], int], None]


def to_jsonable(obj: Any) -> Any:
    """Dataclasses, tuples and paths → plain JSON types: the one serializer of configs (the fingerprint,
    MLflow params, config.yaml, result.json). The orchestrator validates this form back into the dataclass."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return {k: to_jsonable(v) for k, v in asdict(obj).items()}
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    return str(obj)


@dataclass(frozen=True)
class BenchResult:
    """The summary of one finished job.

    kind: "train" | "infer" | "dummy".
    config: the fully resolved job config as JSON-able data (model, data, optimizer, ...).
    metrics: DESIGN.md metric name -> float (NaN is not allowed: omit a metric that does not apply).
    params: parameter accounting: params_active, params_total, sparsity, and "params/<category>" counts.
    info: non-numeric facts worth recording (family, preset, device, allocation fingerprint, ...).
    arrays: raw distributions behind the summary metrics, for figures (kept in result.json, never logged
        as metrics or tags): "expert_tokens" (MoE layers × experts routes, all ranks) and
        "l3_rows_per_token" (rows d_t of every token id, first L3 layer).
    """

    kind: str
    config: dict[str, Any]
    metrics: dict[str, float]
    params: dict[str, float] = field(default_factory=dict)
    info: dict[str, str] = field(default_factory=dict)
    arrays: dict[str, list] = field(default_factory=dict)

    def __post_init__(self) -> None:
        bad = {k: v for k, v in self.metrics.items() if not isinstance(v, int | float) or math.isnan(v)}
        if bad:
            raise ValueError(f"BenchResult.metrics must be finite-or-inf floats, got {bad}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "BenchResult":
        return cls(**json.loads(text))


@dataclass
class JobContext:
    """What the orchestrator passes to a job. Every field is optional, so `run(cfg)` works standalone.

    on_metrics: called as on_metrics({name: value}, step) for per-step metrics (rank 0 only).
    peak_flops: the device's dense peak FLOP/s for the job's dtype, from the hardware catalog in
        `clusters/`; None (e.g. CPU) means MFU is omitted rather than guessed.
    hardware: a catalog name such as "h100-sxm" or "cpu", recorded in `BenchResult.info`.
    checkpoint_dir: where the job writes/resumes checkpoints; None disables checkpointing.
    cache_dir: the data/tokenizer cache (None: $ISOSPARSE_CACHE or ~/.cache/isosparse).
    should_stop: polled between steps; returning True ends the job early (cancellation).
    threads: torch intra-op threads for the job (the orchestrator passes the job's Ray num_cpus); None
        keeps torch's default. The count used is recorded as torch/threads.
    """

    on_metrics: MetricsCallback | None = None
    peak_flops: float | None = None
    hardware: str | None = None
    checkpoint_dir: str | None = None
    cache_dir: str | None = None
    should_stop: Callable[[], bool] | None = None
    threads: int | None = None

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        if self.on_metrics is not None:
            self.on_metrics(dict(metrics), step)

    def stop_requested(self) -> bool:
        return self.should_stop is not None and self.should_stop()

"""Interleaved generation rounds: the one timing core of the infer job's sweep and of `python -m
workloads.bench infer`, so the demo's decode ratios and the benchmark's are one measurement (`measure`).
Details: docs/workloads.md#workloadsjobsrounds."""

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from workloads.jobs.decode import GenerationTimer
from workloads.jobs.timing import TimingStats
from workloads.l3.offload import L3Offload, offload_l3_tables
from workloads.models.transformer import Transformer

BASELINE = "dense"  # the model every other one's decode ratio is taken against
VS_DENSE = "infer/vs_dense/decode_tokens_per_s"  # median over rounds; its p10 and p90:
VS_DENSE_P10, VS_DENSE_P90 = VS_DENSE + "_p10", VS_DENSE + "_p90"


def speed_ratio(baseline: GenerationTimer, timer: GenerationTimer) -> TimingStats:
    """timer's decode speed over baseline's, per round (baseline's median step seconds over timer's, the
    two generations of one round), summarized over the rounds (`TimingStats`: its `_s` fields hold the
    unitless ratio here). Both timers ran in the same rounds."""
    base, mine = baseline.decode_s_per_generation(), timer.decode_s_per_generation()
    if base.shape != mine.shape:
        raise ValueError(f"speed_ratio needs timers of the same rounds, got {base.size} and {mine.size}")
    return TimingStats.of(base / mine)


def rotated(keys: Sequence, round_index: int) -> list:
    """The order of one round: keys rotated left by round_index, so each runs first in turn and a slow
    start of a round (caches cold after the last round's other models) burdens every model alike."""
    k = round_index % len(keys) if keys else 0
    return [*keys[k:], *keys[:k]]


def transfer_name(device: torch.device) -> str:
    """What the offloaded placement's copies are: "h2d" (host → device) on CUDA; on CPU the rows are only
    compacted within host memory ("host_compact"), so no metric claims a device transfer."""
    return "h2d" if device.type == "cuda" else "host_compact"


def placements(cfg, model) -> tuple[str, ...]:
    """The placements an InferJobConfig `cfg` times for a model config: an L3 model's tables (or a SCONE
    model's F) on the device, offloaded, or both; every other model on the device."""
    if (model.l3 is None and model.scone is None) or cfg.l3_placement == "device":
        return ("device",)
    return ("offload",) if cfg.l3_placement == "offload" else ("device", "offload")


@contextlib.contextmanager
def _placed(model: Transformer, placement: str, scone=None) -> Iterator[L3Offload | None]:
    """The model with its L3 tables on the device, or offloaded for the duration of the block; a SCONE
    model (scone: its `FgramTable`) serves F from the device or from host memory ("offload")."""
    if scone is not None:
        handle = scone.serve(model, scone.offload if placement == "offload" else "device")
    else:
        handle = offload_l3_tables(model) if placement == "offload" else None
    try:
        yield handle
    finally:
        if handle is not None:
            handle.remove()


def _generate_placed(
    model: Transformer, prompts: torch.Tensor, timer: GenerationTimer, placement: str, scone=None
) -> dict:
    """One timed generation with the L3 tables at `placement`: its peak device bytes (CUDA) and, when
    offloaded, the bytes the prefill and each decode step copied and the host time each L3 layer waited
    for its rows (mean per L3 call, prefill and decode apart)."""
    device = prompts.device
    out: dict[str, float] = {}
    with _placed(model, placement, scone) as handle:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        prefill: list[tuple[int, int]] = []  # (bytes copied, waits recorded) after the prefill forward

        def after_forward(_out, _n_tokens) -> None:
            if handle is not None and not prefill:
                prefill.append((handle.stats.bytes_copied, len(getattr(handle.stats, "wait_s", ()))))

        timer.generate(model, prompts, on_forward=after_forward)
        if device.type == "cuda":
            out["peak_device_bytes"] = float(torch.cuda.max_memory_allocated(device))
        if scone is not None:
            s = handle.stats
            out |= {
                "lb/scone_match_rate": s.match_rate,
                "lb/scone_mean_match_len": s.mean_match_len,
                "infer/scone_lookup_us_per_token": s.lookup_us_per_token,
            }
        if handle is not None and placement == "offload" and getattr(handle, "compact", True):
            (prefill_bytes, n_prefill_waits), waits = prefill[0], getattr(handle.stats, "wait_s", [])
            decode_bytes = handle.stats.bytes_copied - prefill_bytes
            moved = transfer_name(device)
            out[f"infer/offload/{moved}_bytes_per_prefill"] = float(prefill_bytes)
            out[f"infer/offload/{moved}_bytes_per_decode_step"] = decode_bytes / (timer.gen_len - 1)
            if waits:  # L3 prefetch waits (SCONE's table handle records none)
                out["infer/offload_prefill_wait_s"] = float(np.mean(waits[:n_prefill_waits]))
                out["infer/offload_wait_s"] = float(np.mean(waits[n_prefill_waits:]))
        if handle is not None and placement == "offload":
            out["mem/offload/host_table_bytes"] = float(handle.host_table_bytes)
    return out


@dataclass(frozen=True)
class Measured:
    """One batch size: per model name its metric keys (without the /bs suffix), and the timer of every
    (name, placement) for callers that want the samples (the benchmark's rows)."""

    metrics: dict[str, dict]
    timers: dict[tuple[str, str], GenerationTimer]


def measure(
    models: dict[str, Transformer], prompts: torch.Tensor, cfg, scones: dict | None = None
) -> Measured:
    """One batch size (prompts: (B, P)), every model (by name) × placement of the InferJobConfig `cfg`, in
    cfg.warmup + cfg.repeats rounds. Per model: prefill tokens/s, TTFT and decode tokens/s from the
    medians over its counted generations; beside BASELINE, infer/vs_dense/decode_tokens_per_s with its
    _p10/_p90: the per-round ratio of its first placement's decode speed to BASELINE's. Offload waits are
    medians over the counted generations. scones: a SCONE model's FgramTable, by name."""
    B, P = prompts.shape
    scones = scones or {}
    runs = [(name, p) for name, model in models.items() for p in placements(cfg, model.config)]
    timers = {r: GenerationTimer(prompts.device, cfg.gen_len, cfg.warmup) for r in runs}
    peak = dict.fromkeys(runs, 0.0)
    out: dict[str, dict] = {name: {} for name in models}
    waits: dict[str, list[float]] = {}
    for i in range(cfg.warmup + cfg.repeats):
        for name, placement in rotated(runs, i):
            run_out = _generate_placed(
                models[name], prompts, timers[name, placement], placement, scones.get(name)
            )
            peak[name, placement] = max(peak[name, placement], run_out.pop("peak_device_bytes", 0.0))
            for key in ("infer/offload_wait_s", "infer/offload_prefill_wait_s"):
                if key in run_out and i >= cfg.warmup:
                    waits.setdefault(f"{name}/{key}", []).append(run_out.pop(key))
            out[name] |= {k: v for k, v in run_out.items() if "wait_s" not in k}
    for name, placement in runs:
        m, prefix = out[name], "offload/" if placement == "offload" else ""
        times = timers[name, placement].summary()
        m[f"infer/{prefix}prefill_tokens_per_s"] = B * P / times.prefill.median_s
        m[f"infer/{prefix}ttft_s"] = times.prefill.median_s
        m[f"infer/{prefix}decode_tokens_per_s"] = B / times.decode.median_s
        if prompts.device.type == "cuda":
            m[f"mem/{prefix}peak_device_bytes"] = peak[name, placement]
    for key, values in waits.items():
        name, metric = key.split("/", 1)
        out[name][metric] = float(np.median(values))
    if BASELINE in models:
        for name in models:
            if name != BASELINE:
                first = placements(cfg, models[name].config)[0]
                out[name] |= vs_dense_metrics(speed_ratio(timers[BASELINE, "device"], timers[name, first]))
    return Measured(out, timers)


def vs_dense_metrics(ratio: TimingStats) -> dict[str, float]:
    """The decode ratio to dense and its spread over rounds, as metric keys (without the /bs suffix)."""
    return {VS_DENSE: ratio.median_s, VS_DENSE_P10: ratio.p10_s, VS_DENSE_P90: ratio.p90_s}

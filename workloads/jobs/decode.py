"""Greedy generation with the KV cache, as the inference job times and accounts it.
Details: docs/workloads.md#workloadsjobsdecode."""

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from workloads.jobs.metrics import moe_balance
from workloads.jobs.timing import StepTimer, TimingStats
from workloads.models.transformer import Transformer

# Called with (output of model.forward, number of tokens in that forward) after every forward.
ForwardHook = Callable[[tuple, int], None]


@dataclass(frozen=True)
class GenerationTimes:
    """Post-warm-up seconds: `prefill` per prefill (= time to first token), `decode` per decode step."""

    prefill: TimingStats
    decode: TimingStats


@torch.no_grad()
def greedy_generate(
    model: Transformer,
    prompts: torch.Tensor,
    gen_len: int,
    *,
    prefill_timer: StepTimer | None = None,
    decode_timer: StepTimer | None = None,
    return_expert_counts: bool = False,
    on_forward: ForwardHook | None = None,
) -> torch.Tensor:
    """(B, P) prompt ids -> (B, gen_len) greedy tokens, decoding with a fresh KV cache."""
    B, P = prompts.shape
    cache = model.new_cache(B, P + gen_len)  # allocated outside the timed regions
    kwargs = {"return_expert_counts": True} if return_expert_counts else {}
    tokens = []
    with prefill_timer or contextlib.nullcontext():
        out = model(prompts, cache, **kwargs)
        nxt = out[0][:, -1:].argmax(-1)  # (B, 1)
    tokens.append(nxt)
    if on_forward is not None:
        on_forward(out, B * P)
    for t in range(gen_len - 1):
        with decode_timer or contextlib.nullcontext():
            out = model(nxt, cache, start_pos=P + t, **kwargs)
            nxt = out[0][:, -1:].argmax(-1)  # (B, 1)
        tokens.append(nxt)
        if on_forward is not None:
            on_forward(out, B)
    return torch.cat(tokens, dim=1)  # (B, gen_len)


class GenerationTimer:
    """Times repeated generations of `gen_len` tokens; the first `warmup` generations are not counted.

    Generations of several setups (e.g. L3 placements) can be interleaved, one timer per setup, so that
    a drifting machine load biases none of them.
    """

    def __init__(self, device: torch.device | str, gen_len: int, warmup: int):
        self.gen_len, self.warmup = gen_len, warmup
        self.prefill = StepTimer(device, warmup=warmup)
        self.decode = StepTimer(device, warmup=warmup * (gen_len - 1))

    def generate(
        self, model: Transformer, prompts: torch.Tensor, on_forward: ForwardHook | None = None
    ) -> torch.Tensor:
        return greedy_generate(
            model,
            prompts,
            self.gen_len,
            prefill_timer=self.prefill,
            decode_timer=self.decode,
            on_forward=on_forward,
        )

    def summary(self) -> GenerationTimes:
        return GenerationTimes(prefill=self.prefill.summary(), decode=self.decode.summary())

    def decode_s_per_generation(self) -> np.ndarray:
        """(counted generations,) each counted generation's median decode-step seconds."""
        steps = np.asarray(self.decode.samples_s(), dtype=np.float64).reshape(-1, self.gen_len - 1)
        return np.median(steps[self.warmup :], axis=1)


def moe_generation_balance(model: Transformer, prompts: torch.Tensor, gen_len: int) -> dict[str, float]:
    """lb/* of one untimed generation (prefill + decode steps) through the MoE blocks in the model's mode.

    Counts are pre-capacity routes per expert, summed over the generation's forwards; dropped tokens (all
    top_k routes lost) and dropped routes are the gate's own, per forward (`MoEMLP.last_dropped`, with
    the eval capacity factor in eval mode; zero on the dropless serving path), over tokens × MoE layers
    and all routes.
    """
    moe = model.config.moe
    if moe is None:
        raise ValueError(f"model.family={model.config.family!r} has no MoE blocks")
    gates = [block.mlp for block in model.layers if block.index in moe.positions]
    per_forward: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]] = []  # counts, aux, drops, n

    def collect(out: tuple, n_tokens: int) -> None:
        _, aux, counts = out
        drops = torch.stack([mlp.last_dropped for mlp in gates]).sum(0)  # (2,) tokens, routes
        per_forward.append((torch.stack([counts[k] for k in sorted(counts)]), aux, drops, n_tokens))

    for mlp in gates:  # the dropless serving path computes its aux loss only when asked
        mlp.record_balance = True
    try:
        greedy_generate(model, prompts, gen_len, return_expert_counts=True, on_forward=collect)
    finally:
        for mlp in gates:
            mlp.record_balance = False
    total = np.zeros((len(moe.positions), moe.num_experts), dtype=np.int64)
    drops, passes, aux_sum = np.zeros(2), 0, 0.0
    for counts, aux, dropped, n_tokens in per_forward:  # read back after the generation, once per forward
        total += counts.cpu().numpy()
        drops += dropped.cpu().numpy()
        passes += n_tokens * len(gates)
        aux_sum += float(aux)
    return moe_balance(
        total, drops[1], aux_sum, len(per_forward), dropped_tokens=drops[0], token_passes=passes
    )

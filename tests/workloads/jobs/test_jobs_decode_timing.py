"""The inference job's throughput arithmetic against a fake clock: a fake model whose forwards take known
times, so every tokens/s and TTFT number has an exact expected value (catches B·P/t for decode, a dropped
warm-up, a prefill counted as a decode step)."""

import types

import pytest
import torch

from workloads.jobs import infer, timing

VOCAB = 5


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 0.0

    def perf_counter(self) -> float:
        return self.now_s


class TimedModel:
    """Stands in for the Transformer in `greedy_generate`: a forward over T > 1 positions is a prefill,
    T = 1 a decode step. The first `slow` generations (the warm-up) take 8x longer. Durations are binary
    fractions, so the fake clock sums them exactly."""

    def __init__(self, clock: FakeClock, prefill_s: float, decode_s: float, slow: int):
        self.clock, self.prefill_s, self.decode_s, self.slow = clock, prefill_s, decode_s, slow
        self.generations = 0
        self.config = types.SimpleNamespace(l3=None, scone=None)  # dense: one placement, "device"

    def new_cache(self, batch: int, length: int) -> None:
        return None

    def __call__(self, ids: torch.Tensor, cache, start_pos: int = 0):
        B, T = ids.shape
        if T > 1:
            self.generations += 1
        factor = 8.0 if self.generations <= self.slow else 1.0
        self.clock.now_s += factor * (self.prefill_s if T > 1 else self.decode_s)
        return (torch.zeros(B, T, VOCAB),)


@pytest.mark.parametrize(("batch", "prompt_len", "gen_len", "warmup"), [(1, 7, 4, 1), (3, 5, 6, 2)])
def test_decode_prefill_and_ttft_are_exact_under_a_fake_clock(
    monkeypatch, batch, prompt_len, gen_len, warmup
):
    clock = FakeClock()
    monkeypatch.setattr(timing, "time", types.SimpleNamespace(perf_counter=clock.perf_counter))
    model = TimedModel(clock, prefill_s=0.25, decode_s=0.03125, slow=warmup)
    cfg = infer.InferJobConfig(
        "tiny",
        "dense",
        batch_sizes=(batch,),
        prompt_len=prompt_len,
        gen_len=gen_len,
        warmup=warmup,
        repeats=1,
    )
    prompts = torch.zeros(batch, prompt_len, dtype=torch.int64)
    out = infer._measure({"dense": model}, prompts, cfg)["dense"]
    assert model.generations == warmup + 1  # the warm-up generations ran, untimed
    assert out["infer/ttft_s"] == 0.25  # one prefill forward: the warm-up's 2 s are not counted
    assert out["infer/prefill_tokens_per_s"] == batch * prompt_len / 0.25
    assert out["infer/decode_tokens_per_s"] == batch / 0.03125  # B new tokens per decode step, not B·P

"""The inference job's throughput arithmetic against a fake clock: a fake model whose forwards take known
times, so every tokens/s, TTFT and per-round ratio has an exact expected value (catches B·P/t for decode, a
dropped warm-up, a prefill counted as a decode step, a ratio of pooled medians, rounds paired wrongly)."""

import types

import pytest
import torch

from workloads.jobs import infer, rounds, timing

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
    out = rounds.measure({"dense": model}, prompts, cfg).metrics["dense"]
    assert model.generations == warmup + 1  # the warm-up generations ran, untimed
    assert out["infer/ttft_s"] == 0.25  # one prefill forward: the warm-up's 2 s are not counted
    assert out["infer/prefill_tokens_per_s"] == batch * prompt_len / 0.25
    assert out["infer/decode_tokens_per_s"] == batch / 0.03125  # B new tokens per decode step, not B·P


class ScheduledModel(TimedModel):
    """Its n-th generation's decode steps take decode_s[n - 1] (the prefill stays prefill_s); logs its
    name in `order` at every prefill."""

    def __init__(self, clock: FakeClock, name: str, decode_s: list[float], order: list[str]):
        super().__init__(clock, prefill_s=0.25, decode_s=0.0, slow=0)
        self.name, self.schedule, self.order = name, decode_s, order

    def __call__(self, ids: torch.Tensor, cache, start_pos: int = 0):
        if ids.shape[1] > 1:
            self.order.append(self.name)
            self.decode_s = self.schedule[self.generations]  # before the prefill counts this generation
        return super().__call__(ids, cache, start_pos)


def test_decode_ratio_is_taken_per_round_then_summarized(monkeypatch):
    """Hand-worked: one warm-up round (8 s steps, dropped), then 4 rounds. dense/l3 step seconds per round:
    (1/32)/(1/16) = 0.5, (1/16)/(1/16) = 1, (1/32)/(1/64) = 2, (1/32)/(1/32) = 1 → sorted 0.5, 1, 1, 2:
    median 1, p10 0.5 + 0.3·0.5 = 0.65, p90 1 + 0.7·1 = 1.7. Pooled medians would give (1/32)/(3/64)."""
    clock, order = FakeClock(), []
    monkeypatch.setattr(timing, "time", types.SimpleNamespace(perf_counter=clock.perf_counter))
    dense = ScheduledModel(clock, "dense", [8.0, 1 / 32, 1 / 16, 1 / 32, 1 / 32], order)
    l3 = ScheduledModel(clock, "l3", [8.0, 1 / 16, 1 / 16, 1 / 64, 1 / 32], order)
    cfg = infer.InferJobConfig("tiny", "l3", batch_sizes=(2,), prompt_len=3, gen_len=5, warmup=1, repeats=4)
    measured = rounds.measure({"dense": dense, "l3": l3}, torch.zeros(2, 3, dtype=torch.int64), cfg)
    m = measured.metrics["l3"]
    assert (m[rounds.VS_DENSE], m[rounds.VS_DENSE_P10], m[rounds.VS_DENSE_P90]) == pytest.approx(
        (1.0, 0.65, 1.7), abs=1e-12
    )
    assert rounds.VS_DENSE not in measured.metrics["dense"]
    assert m["infer/decode_tokens_per_s"] == 2 / (3 / 64)  # pooled median step of the 4 counted rounds
    assert order == ["dense", "l3", "l3", "dense", "dense", "l3", "l3", "dense", "dense", "l3"]  # rotated
    assert measured.timers["l3", "device"].decode_s_per_generation().tolist() == [
        1 / 16,
        1 / 16,
        1 / 64,
        1 / 32,
    ]


def test_rotated():
    assert [rounds.rotated("abc", i) for i in range(4)] == [
        list("abc"),
        list("bca"),
        list("cab"),
        list("abc"),
    ]
    assert rounds.rotated([], 3) == []

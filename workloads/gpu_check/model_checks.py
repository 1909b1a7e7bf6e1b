"""Model-level checks: L3 vs dense train step at iso-active (bf16 autocast), offloaded vs on-device decode,
and host syncs per training step. Models come from the presets with synthetic Zipf allocations and ids
(no corpus or tokenizer on the GPU image): frequent ids own the most rows, as with LZW, but the rows a
position reads on average differ from those of an LZW allocation on a real corpus, so "iso-active" holds
for the preset's plan, not exactly for these synthetic batches.
"""

import contextlib
import warnings
from dataclasses import replace

import torch
import torch.nn.functional as F

from workloads.gpu_check.lookup_checks import zipf_counts, zipf_ids
from workloads.jobs.decode import greedy_generate
from workloads.jobs.timing import StepTimer
from workloads.l3.host_reads import count_host_reads
from workloads.l3.offload import offload_l3_tables
from workloads.models import presets
from workloads.models.transformer import Transformer


def build(preset: str, family: str, impl: str, device) -> Transformer:
    cfg = presets.get(preset, family)
    counts = None
    if cfg.l3 is not None:
        cfg = replace(cfg, l3=replace(cfg.l3, impl=impl))
        alloc = zipf_counts(cfg.vocab_size, cfg.l3.budget, cfg.l3.cap)
        counts = dict.fromkeys(cfg.l3.positions, alloc)
    torch.manual_seed(0)
    return Transformer(cfg, l3_counts=counts).to(device)


class Trainer:
    """One model, its fused AdamW and a fixed batch: `step()` = forward, backward, optimizer step."""

    def __init__(self, model: Transformer, batch: int, seq: int, device):
        self.model, self.device = model, torch.device(device)
        fused = self.device.type == "cuda"
        self.opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused)
        ids = zipf_ids(model.config.vocab_size, batch * (seq + 1), seed=1).reshape(batch, seq + 1)
        rows = torch.from_numpy(ids).to(device)
        self.x, self.y = rows[:, :-1].contiguous(), rows[:, 1:].contiguous()
        self.tokens = batch * seq

    def forward_backward(self) -> None:
        with torch.autocast(self.device.type, dtype=torch.bfloat16):
            logits, aux = self.model(self.x)
            loss = F.cross_entropy(logits.flatten(0, 1).float(), self.y.flatten()) + aux
        loss.backward()

    def optimizer_step(self) -> None:
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)

    def step(self) -> None:
        self.forward_backward()
        self.optimizer_step()


def train_steps(
    preset: str, impls: list[str], device, batch: int, seq: int, steps: int, warmup: int
) -> list[dict]:
    """Tokens/s of dense and of L3 per impl, interleaved step by step (a drifting machine biases none)."""
    runs = {"dense": Trainer(build(preset, "dense", "auto", device), batch, seq, device)}
    for impl in impls:
        runs[f"l3/{impl}"] = Trainer(build(preset, "l3", impl, device), batch, seq, device)
    timers = {name: StepTimer(device, warmup=warmup) for name in runs}
    for _ in range(steps + warmup):
        for name, run in runs.items():
            with timers[name]:
                run.step()
    dense_s = timers["dense"].summary().median_s
    rows = []
    for name, run in runs.items():
        stats = timers[name].summary()
        rows.append(
            {
                "model": name,
                "median_step_s": stats.median_s,
                "p10_s": stats.p10_s,
                "p90_s": stats.p90_s,
                "tokens_per_s": run.tokens / stats.median_s,
                "vs_dense": dense_s / stats.median_s,
            }
        )
    del runs
    return rows


class SyncCounter:
    """Counts host syncs inside `with counter:`. CUDA: torch.cuda.set_sync_debug_mode("warn") and its
    warnings (every synchronizing call). CPU: there are no syncs, so the reads of tensor values that
    sync on CUDA (item, tolist, bool, ...) are counted instead (`workloads.l3.host_reads`)."""

    def __init__(self, device):
        self.cuda = torch.device(device).type == "cuda"
        self.count = 0

    def __enter__(self) -> "SyncCounter":
        self._stack = contextlib.ExitStack()
        if self.cuda:
            torch.cuda.synchronize()
            self._caught = self._stack.enter_context(warnings.catch_warnings(record=True))
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            self._stack.callback(torch.cuda.set_sync_debug_mode, "default")
        else:
            self._reads = self._stack.enter_context(count_host_reads())
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()
        if self.cuda:
            self.count = sum("synchroniz" in str(w.message) for w in self._caught)
        else:
            self.count = sum(self._reads.values())


def host_syncs(preset: str, impls: list[str], device, batch: int, seq: int) -> list[dict]:
    """Host syncs of one (warmed-up) training step, dense and L3 per impl: in forward + backward, and in
    the optimizer step (none with CUDA's fused AdamW; on CPU AdamW reads each parameter's step count)."""
    rows = []
    for name, family, impl in [("dense", "dense", "auto")] + [(f"l3/{i}", "l3", i) for i in impls]:
        trainer = Trainer(build(preset, family, impl, device), batch, seq, device)
        trainer.step()  # warm-up: lazy init, kernel compilation
        with SyncCounter(device) as fwd_bwd:
            trainer.forward_backward()
        with SyncCounter(device) as opt:
            trainer.optimizer_step()
        how = "cuda sync debug mode" if fwd_bwd.cuda else "host reads (cpu)"
        rows.append({"model": name, "fwd_bwd": fwd_bwd.count, "optimizer": opt.count, "how": how})
        del trainer
    return rows


def decode(preset: str, device, batches: tuple[int, ...], prompt_len: int, gen_len: int) -> list[dict]:
    """Greedy decode tokens/s of the L3 model (impl auto) with tables on the device and offloaded to host
    memory (pinned; each layer's rows gathered on the prefetch thread while earlier layers run, issue 21),
    per batch size, interleaved generation by generation; with the host time an L3 layer waited for its
    rows (mean per call). Goal: offloaded ≥ 0.97× on device."""
    model = build(preset, "l3", "auto", device).eval()
    vocab, rows = model.config.vocab_size, []
    for batch in batches:
        prompts = torch.from_numpy(zipf_ids(vocab, batch * prompt_len, seed=batch).reshape(batch, prompt_len))
        prompts = prompts.to(device)
        timers = {
            "on_device": StepTimer(device, warmup=gen_len - 1),
            "offloaded": StepTimer(device, warmup=gen_len - 1),
        }
        waits: list[float] = []
        for _ in range(3):
            greedy_generate(model, prompts, gen_len, decode_timer=timers["on_device"])
            handle = offload_l3_tables(model)
            greedy_generate(model, prompts, gen_len, decode_timer=timers["offloaded"])
            waits += handle.stats.wait_s
            handle.remove()
        on, off = (timers[k].summary().median_s for k in ("on_device", "offloaded"))
        rows.append(
            {
                "batch": batch,
                "on_device_tokens_per_s": batch / on,
                "offloaded_tokens_per_s": batch / off,
                "offloaded_vs_on_device": on / off,
                "goal": ">= 0.97",
                "wait_us_per_l3_call": 1e6 * sum(waits) / max(len(waits), 1),
            }
        )
    del model
    return rows

"""Parallelism applied to a built model (torchtitan's `parallelize` style), outside the model code.
Details: docs/workloads.md#workloadsjobsdistributed."""

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn

from workloads.jobs import row_sparse
from workloads.models.moe import MoEMLP


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def world() -> World:
    """This process's place in the default process group (rank 0 of 1 without one)."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    local = int(os.environ.get("LOCAL_RANK", dist.get_rank() % max(torch.cuda.device_count(), 1)))
    return World(dist.get_rank(), dist.get_world_size(), local)


def job_device(kind: str, w: World) -> torch.device:
    """cpu, or this rank's GPU (cuda:LOCAL_RANK) for kind "cuda"."""
    if kind == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError("device='cuda' but torch sees no CUDA device")
    device = torch.device("cuda", w.local_rank % torch.cuda.device_count())
    torch.cuda.set_device(device)
    return device


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum `t` over all ranks in place (a no-op in a single process); returns `t`."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier() -> None:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def reseed_experts(model: nn.Module, seed: int, ep_rank: int) -> None:
    """Give each expert-parallel rank's local experts their own init (the model was built from one seed on
    every rank, so without this expert i of rank 0 would equal expert i of rank 1)."""
    with torch.random.fork_rng():  # the caller's RNG streams stay untouched
        torch.manual_seed(seed * 7919 + ep_rank + 1)
        for module in model.modules():
            if isinstance(module, MoEMLP):
                for expert in module.experts:
                    expert.reset_parameters()


class TrainEngine:
    """One optimizer step = k × (`micro(last)` forward, `backward`) then `optimizer_step`.

    `module` is what the forward is called on (DDP wrapper, DeepSpeed engine or the model); `model` is the
    plain Transformer (state dicts, evaluation); `optimizer` the torch AdamW.
    """

    def __init__(self, model: nn.Module, module: nn.Module, optimizer, grad_accum: int, grad_clip: float):
        self.model, self.module, self.optimizer = model, module, optimizer
        self.grad_accum, self.grad_clip = grad_accum, grad_clip

    @contextlib.contextmanager
    def micro(self, last: bool) -> Iterator[None]:
        """Around one micro-batch's forward and backward; DDP skips the gradient all-reduce unless `last`."""
        if isinstance(self.module, nn.parallel.DistributedDataParallel) and not last:
            with self.module.no_sync():
                yield
        else:
            yield

    def backward(self, loss: torch.Tensor) -> None:
        (loss / self.grad_accum).backward()

    def optimizer_step(self) -> None:
        if self.grad_clip > 0:
            params = [p for p in self.model.parameters() if p.grad is not None]
            if any(p.grad.is_sparse for p in params):  # L3 tables with sparse_grad (row_sparse.py)
                row_sparse.clip_grad_norm_(params, self.grad_clip)
            else:
                nn.utils.clip_grad_norm_(params, self.grad_clip, foreach=True)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


class DeepSpeedTrainEngine(TrainEngine):
    """The DeepSpeed engine does the loss scaling by 1/grad_accum, the expert/data-parallel gradient
    all-reduces, clipping and the optimizer step at the accumulation boundary (`engine.step()` is called
    after every micro-batch, as DeepSpeed expects)."""

    @contextlib.contextmanager
    def micro(self, last: bool) -> Iterator[None]:
        yield

    def backward(self, loss: torch.Tensor) -> None:
        self.module.backward(loss)
        self.module.step()

    def optimizer_step(self) -> None:
        pass  # done by the engine's step() on the last micro-batch


def parallelize(
    model: nn.Module,
    groups: list[dict],
    make_optimizer,
    *,
    w: World,
    device: torch.device,
    ep_size: int,
    micro_batch: int,
    grad_accum: int,
    grad_clip: float,
    seed: int,
) -> TrainEngine:
    """Wrap `model` for this world and build its optimizer from `groups` via `make_optimizer(groups)`."""
    if ep_size > 1:
        return _deepspeed(model, groups, make_optimizer, w, ep_size, micro_batch, grad_accum, grad_clip, seed)
    optimizer = make_optimizer(groups)
    if w.size == 1:
        return TrainEngine(model, model, optimizer, grad_accum, grad_clip)
    ids = [device.index] if device.type == "cuda" else None
    ddp = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    return TrainEngine(model, ddp, optimizer, grad_accum, grad_clip)


def _deepspeed(model, groups, make_optimizer, w, ep_size, micro_batch, grad_accum, grad_clip, seed):
    import deepspeed
    from deepspeed.moe.utils import split_params_into_different_moe_groups_for_optimizer

    reseed_experts(model, seed, ep_rank=w.rank % ep_size)
    optimizer = make_optimizer(split_params_into_different_moe_groups_for_optimizer(groups))
    config = {
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": grad_accum,
        "gradient_clipping": grad_clip,
        "zero_optimization": {"stage": 0},
        "steps_per_print": 2**62,
    }
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
    return DeepSpeedTrainEngine(model, engine, optimizer, grad_accum, grad_clip)

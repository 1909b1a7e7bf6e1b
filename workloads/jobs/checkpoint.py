"""Training checkpoints: one folder per step, one file per rank, made visible atomically; and the final
weights of a finished job (`<dir>/final-model.pt`, the model's state dict only, for evaluation).
Details: docs/workloads.md#workloadsjobscheckpoint."""

import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

_STEP_DIR = re.compile(r"^step-(\d{8})$")
KEEP_LAST = 2  # older complete checkpoints are deleted after a new one lands
FINAL_WEIGHTS = "final-model.pt"  # a finished job's model state dict alone (what an eval job loads)


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def latest_step(directory: str | os.PathLike) -> int | None:
    """The highest step with a complete checkpoint under `directory`, or None."""
    directory = Path(directory)
    if not directory.is_dir():
        return None
    steps = [int(m.group(1)) for p in directory.iterdir() if (m := _STEP_DIR.match(p.name)) and p.is_dir()]
    return max(steps, default=None)


def _step_dir(directory: Path, step: int, tmp: bool = False) -> Path:
    return directory / f"{'.tmp-' if tmp else ''}step-{step:08d}"


def save(
    directory: str | os.PathLike, step: int, state: dict[str, Any], rank: int, world_size: int, barrier
) -> Path:
    """Write this rank's `state` for `step`; every rank must call it (it holds a barrier)."""
    directory = Path(directory)
    tmp = _step_dir(directory, step, tmp=True)
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)  # a leftover of an earlier crash at the same step
        tmp.mkdir(parents=True)
    barrier()
    state = {**state, "step": step, "world_size": world_size}
    part = tmp / f"rank-{rank}.pt.part"
    torch.save(state, part)
    part.rename(tmp / f"rank-{rank}.pt")
    barrier()
    final = _step_dir(directory, step)
    if rank == 0:
        shutil.rmtree(final, ignore_errors=True)
        os.rename(tmp, final)
        _prune(directory, keep=KEEP_LAST)
    barrier()
    return final


def _prune(directory: Path, keep: int) -> None:
    steps = sorted(int(m.group(1)) for p in directory.iterdir() if (m := _STEP_DIR.match(p.name)))
    for step in steps[:-keep]:
        shutil.rmtree(_step_dir(directory, step), ignore_errors=True)


def load(directory: str | os.PathLike, step: int, rank: int, world_size: int) -> dict[str, Any]:
    """This rank's state of checkpoint `step`; the world size must be the one it was written with."""
    path = _step_dir(Path(directory), step) / f"rank-{rank}.pt"
    if not path.is_file():
        raise ValueError(f"checkpoint {path} is missing (written by a job with another world size?)")
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state["world_size"] != world_size:
        raise ValueError(
            f"checkpoint {path.parent} was written by {state['world_size']} ranks, this job has {world_size}"
        )
    return state


def save_weights(directory: str | os.PathLike, model: torch.nn.Module) -> Path:
    """Write `model`'s state dict to <directory>/final-model.pt atomically (rank 0 of a finished job)."""
    path = Path(directory) / FINAL_WEIGHTS
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    torch.save(model.state_dict(), part)
    part.rename(path)
    return path


def load_weights(model: torch.nn.Module, path: str | os.PathLike) -> None:
    """Load a model state dict (a .pt file, or a dict with a "model" entry: a rank file of a training
    checkpoint) or a checkpoint folder (its latest step's rank 0) into `model`; a DDP prefix is dropped."""
    source = Path(path)
    if source.is_dir():
        step = latest_step(source)
        if step is None:
            raise ValueError(f"checkpoint folder {str(path)!r} holds no complete step-* checkpoint")
        source = _step_dir(source, step) / "rank-0.pt"
    if not source.is_file():
        raise ValueError(f"checkpoint {str(path)!r} is neither a checkpoint folder nor a file")
    state = torch.load(source, map_location="cpu", weights_only=False)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    model.load_state_dict({k.removeprefix("module."): v for k, v in state.items()})

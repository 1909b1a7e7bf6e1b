"""The eval job: `run(EvalJobConfig, ctx) -> BenchResult`; downstream tasks through lm-evaluation-harness on
a trained model's final weights (the adapter: `workloads.jobs.lm_eval_adapter.IsoLM`).
Details: docs/workloads.md#workloadsjobsevaluate."""

import functools
import hashlib
import json
import os
import re
import resource
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Literal

import torch

from workloads.data import DataConfig
from workloads.fields import MinLen, NonNegInt, PosInt, check_fields
from workloads.jobs import checkpoint
from workloads.jobs.result import BenchResult, JobContext, to_jsonable
from workloads.jobs.setup import FieldError, base_model_config, build_model, device_and_dtype, prepare_job
from workloads.jobs.spec import ModelOverrides, ModelSpec
from workloads.l3.offload import offload_l3_tables
from workloads.models.config import Family, ModelConfig
from workloads.models.moe import serve_dropless

WEIGHTS_FILE = checkpoint.FINAL_WEIGHTS  # a train job with save_weights writes it into its folder
TASK_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
LOCAL_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}
# The metrics of a local task per kind (lm-eval metric names; each also gets its standard error).
LOCAL_METRICS = {
    "multiple_choice": ("acc", "acc_norm"),
    "perplexity": ("word_perplexity", "byte_perplexity", "bits_per_byte"),
}
# lm-eval's own aggregation of each (stated, so that it does not warn that it picks the default).
AGGREGATION = {
    "acc": ("mean", True),
    "acc_norm": ("mean", True),
    "bits_per_byte": ("bits_per_byte", False),
    "word_perplexity": ("weighted_perplexity", False),
    "byte_perplexity": ("weighted_perplexity", False),
}


@dataclass(frozen=True)
class EvalTask:
    """One downstream task.

    name: a harness task name ("arc_easy", "hellaswag", "piqa", "winogrande", "wikitext"), or, with `path`,
        the name a local task is logged under (letters, digits, _ . -).
    path: a local .jsonl / .json / .parquet file: an inline task, evaluated on all its rows, no network.
    kind: the local task's type: "multiple_choice" (acc, acc_norm: the choice with the highest
        log-likelihood of `choices` after `text`) or "perplexity" (the rolling log-likelihood of `target`:
        word and byte perplexity, bits per byte).
    text / choices / target: Jinja templates over a row (lm-eval's doc_to_text / doc_to_choice /
        doc_to_target); for multiple choice `target` renders the index of the right choice.
    num_fewshot: examples from the same file before each question (harness tasks: their own split).
    """

    name: str
    path: str | None = None
    kind: Literal["multiple_choice", "perplexity"] = "multiple_choice"
    text: str = "{{question}}"
    choices: str = "{{choices}}"
    target: str = "{{answer}}"
    num_fewshot: NonNegInt = 0

    def __post_init__(self) -> None:
        check_fields(self)
        if not TASK_NAME.match(self.name):
            raise ValueError(f"EvalTask.name must be letters, digits, '_', '.' or '-', got {self.name!r}")
        if self.path is not None and Path(self.path).suffix not in LOCAL_FORMATS:
            raise ValueError(f"EvalTask.path must end in one of {sorted(LOCAL_FORMATS)}, got {self.path!r}")

    def harness_config(self) -> str | dict:
        """What lm-eval is given: the task's name, or an inline task config over the local file."""
        if self.path is None:
            return self.name if not self.num_fewshot else {"task": self.name, "num_fewshot": self.num_fewshot}
        path = str(Path(self.path).expanduser().resolve())
        config = {
            "task": self.name,
            "dataset_path": LOCAL_FORMATS[Path(path).suffix],
            "dataset_kwargs": {"data_files": {"test": path}},
            "test_split": "test",
            "num_fewshot": self.num_fewshot,
            "metric_list": [
                {"metric": m, "aggregation": AGGREGATION[m][0], "higher_is_better": AGGREGATION[m][1]}
                for m in LOCAL_METRICS[self.kind]
            ],
        }
        if self.num_fewshot:
            config["fewshot_split"] = "test"
        if self.kind == "perplexity":
            return config | {
                "output_type": "loglikelihood_rolling",
                "doc_to_text": "",
                "doc_to_target": self.target,
            }
        return config | {
            "output_type": "multiple_choice",
            "doc_to_text": self.text,
            "doc_to_choice": self.choices,
            "doc_to_target": self.target,
        }


@dataclass(frozen=True)
class EvalJobConfig:
    """Downstream evaluation of one trained model. `data` is the corpus it was trained on (its tokenizer,
    L3 allocation and SCONE f-grams); the orchestrator sets it, and the model, to its train job's.

    tasks: what to evaluate (EvalTask). limit: at most this many documents per task (None: all).
    batch_size: requests per forward; max_length: tokens per forward (None: the model's max_seq_len).
    l3_placement: the L3 tables on the "device" or "offload"ed to host memory; a SCONE model's F likewise
        ("offload": host memory); nothing to place for dense and MoE (one suite section serves every
        family). device / dtype: as the infer job ("auto": cuda when there, bfloat16 on it).
    checkpoint: the weights: a .pt state dict or a training checkpoint folder; None reads its train job's
        folder (ctx.checkpoint_dir, as the orchestrator names it): final-model.pt, else the last step.
    """

    preset: str
    family: Family
    tasks: Annotated[tuple[EvalTask, ...], MinLen(1)]
    overrides: ModelOverrides = field(default_factory=ModelOverrides)
    allocation_path: str | None = None
    data: DataConfig = field(default_factory=DataConfig)
    seed: NonNegInt = 0
    limit: PosInt | None = None
    batch_size: PosInt = 16
    max_length: PosInt | None = None
    l3_placement: Literal["device", "offload"] = "device"
    device: str = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    checkpoint: str | None = None
    model: ModelConfig | None = None

    def __post_init__(self) -> None:
        check_fields(self)
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"EvalJobConfig.tasks names repeat: {names}")
        self.model_spec()

    def model_spec(self) -> ModelSpec:
        return ModelSpec(self.preset, self.family, self.overrides, self.allocation_path)


def resolve(cfg: EvalJobConfig, cuda: bool | None = None, model: ModelConfig | None = None) -> EvalJobConfig:
    """Device and dtype fixed as the infer job does; `model` (the train job's, matched in its group) in the
    job's dtype. A MoE model is evaluated through its dropless inference path (`serve_dropless`): no token
    is dropped for capacity, so a request's score does not depend on what else is in its batch."""
    if cfg.model is not None:
        return cfg
    device, dtype = device_and_dtype(cfg.device, cfg.dtype, cuda)
    base = model or base_model_config(cfg.model_spec())
    if cfg.max_length is not None and not 2 <= cfg.max_length <= base.max_seq_len:
        raise FieldError(
            "max_length",
            f"{cfg.max_length} must lie in [2, {base.max_seq_len}] (the model's "
            f"max_seq_len, preset {cfg.preset!r})",
        )
    if model is not None and model.moe is not None and model.moe.ep_size > 1:
        raise FieldError("overrides.moe_ep_size", f"{model.moe.ep_size}: evaluation runs on one device")
    for i, task in enumerate(cfg.tasks):
        if task.path is not None and not Path(task.path).expanduser().is_file():
            raise FieldError(f"tasks[{i}].path", f"no such file: {task.path!r}")
    unknown = [t.name for t in cfg.tasks if t.path is None and t.name not in harness_tasks()]
    if unknown:
        raise FieldError(
            "tasks",
            f"unknown lm-eval task(s) {unknown} (lm-eval {_lm_eval_version()}; a local file needs `path`)",
        )
    out = replace(cfg, device=device, dtype=dtype)
    return out if model is None else replace(out, model=_specialize(model, dtype))


@functools.cache
def harness_tasks() -> frozenset[str]:
    """Every task, group and tag name lm-eval knows (indexing its task folders takes seconds: once)."""
    from lm_eval.tasks import TaskManager

    return frozenset(TaskManager().all_tasks)


def _lm_eval_version() -> str:
    from importlib.metadata import version

    return version("lm_eval")


def _specialize(model: ModelConfig, dtype: str) -> ModelConfig:
    return replace(model, dtype=dtype)


def _weights(cfg: EvalJobConfig, ctx: JobContext) -> str:
    """cfg.checkpoint, else in the train job's folder its final weights, else its last checkpoint (a train
    job that checkpoints saves one at its final step)."""
    if cfg.checkpoint is not None:
        return cfg.checkpoint
    folder = Path(ctx.checkpoint_dir) if ctx.checkpoint_dir else None
    if folder is not None and (folder / WEIGHTS_FILE).is_file():
        return str(folder / WEIGHTS_FILE)
    if folder is not None and checkpoint.latest_step(folder) is not None:
        return str(folder)
    where = f"{ctx.checkpoint_dir}/{WEIGHTS_FILE}" if ctx.checkpoint_dir else "no checkpoint folder given"
    raise ValueError(
        f"EvalJobConfig.checkpoint is not set and its train job's final weights are missing "
        f"({where}): an eval job evaluates trained weights, never random ones"
    )


def _offline_env(tasks: tuple[EvalTask, ...], cache_dir: Path) -> None:
    """HF datasets caches under the job's cache; hub and datasets offline unless a harness task downloads."""
    os.environ.setdefault("HF_DATASETS_CACHE", str(cache_dir / "hf_datasets"))
    os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] = "1"  # a job log: no bars for a local file's load
    if all(t.path is not None for t in tasks):
        os.environ["HF_DATASETS_OFFLINE"] = os.environ["HF_HUB_OFFLINE"] = "1"


def _digest(docs) -> str:
    """sha256 of the documents evaluated (JSON, keys sorted): what the scores were measured on."""
    h = hashlib.sha256()
    for doc in docs:
        h.update(json.dumps(doc, sort_keys=True, default=str).encode())
    return h.hexdigest()


def _task_dict(cfg: EvalJobConfig) -> dict:
    """lm-eval's TaskDict ({"tasks": leaf tasks by name, "groups": ..., "group_map": ...})."""
    from lm_eval.tasks import TaskManager

    harness = any(t.path is None for t in cfg.tasks)  # indexing every harness task takes seconds
    return TaskManager(include_defaults=harness).load([t.harness_config() for t in cfg.tasks])


def _task_docs(task_dict: dict, name: str, limit: int | None) -> list:
    """The documents a task (each leaf task of a group) is scored on: its first `limit` ones, as lm-eval."""
    if name in task_dict["tasks"]:
        return list(task_dict["tasks"][name].eval_docs)[:limit]
    children = task_dict.get("group_map", {}).get(name, [])
    return [doc for child in children for doc in _task_docs(task_dict, child, limit)]


def _metrics(results: dict, tasks: tuple[EvalTask, ...]) -> dict[str, float]:
    """lm_eval/<task>/<metric> and .../<metric>_stderr from lm-eval's results ("acc,none": ...)."""
    out = {}
    for task in tasks:
        for key, value in results.get(task.name, {}).items():
            metric, _, filt = key.partition(",")
            if not filt or not isinstance(value, int | float) or isinstance(value, bool):
                continue  # "alias", "N/A" standard errors
            suffix = "" if filt == "none" else f"/{filt}"
            out[f"lm_eval/{task.name}/{metric}{suffix}"] = float(value)
    return out


def run(cfg: EvalJobConfig, ctx: JobContext | None = None) -> BenchResult:
    """Load the weights, place the model, run every task through lm-eval; see the module doc."""
    from lm_eval import evaluator

    from workloads.data import resolve_cache_dir
    from workloads.jobs.lm_eval_adapter import IsoLM
    from workloads.scone.serve import FgramTable

    ctx = ctx or JobContext()
    cfg = resolve(cfg)  # a no-op for what the orchestrator ships
    weights = _weights(cfg, ctx)
    _offline_env(cfg.tasks, resolve_cache_dir(ctx.cache_dir))
    spec, device = cfg.model_spec(), torch.device(cfg.device)
    job = prepare_job(spec, cfg.model, cfg.data, ctx.cache_dir, lambda m: _specialize(m, cfg.dtype))
    data, model_cfg, counts, scone_data = job.data, job.model, job.counts, job.scone
    fgrams = scone_data.fgrams if scone_data is not None else None
    model = build_model(model_cfg, counts, device, seed=cfg.seed, fgrams=fgrams).eval()
    checkpoint.load_weights(model, weights)
    if model_cfg.moe is not None:
        serve_dropless(model)
    if scone_data is not None:  # F once, from the trained A_fgram (L3_SPEC §6); each request tagged by suffix
        table = FgramTable(scone_data.matcher, model.precompute_fgram_table())
        handle = table.serve(model, "host" if cfg.l3_placement == "offload" else "device")
    else:
        offload = cfg.l3_placement == "offload" and model_cfg.l3 is not None  # dense / MoE: nothing to place
        handle = offload_l3_tables(model) if offload else None
    try:
        task_dict = _task_dict(cfg)
        lm = IsoLM(model, data.tokenizer, data.eot_id, cfg.batch_size, cfg.max_length)
        out = evaluator.evaluate(
            lm=lm,
            task_dict=task_dict,
            limit=cfg.limit,
            log_samples=False,
            bootstrap_iters=1000,
            verbosity="WARNING",
        )
    finally:
        if handle is not None:
            handle.remove()
    metrics = _metrics(out["results"], cfg.tasks)
    metrics["mem/peak_host_bytes"] = float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    datasets = data.dataset_inputs()[:1]  # the corpus the weights were trained on
    for task in cfg.tasks:
        docs = _task_docs(task_dict, task.name, cfg.limit)
        datasets.append(
            {
                "name": task.name,
                "digest": _digest(docs),
                "context": "eval",
                "source": task.path or f"lm-eval:{task.name}",
                "n_docs": len(docs),
            }
        )
    placed = cfg.l3_placement if model_cfg.family in ("l3", "scone") else "device"
    info = {
        "family": model_cfg.family,
        "preset": cfg.preset,
        "device": str(device),
        "dtype": model_cfg.dtype,
        "weights": weights,
        "placement": placed,
        "hardware": ctx.hardware or "",
        "data_fingerprint": data.fingerprint,
        "datasets": json.dumps(datasets),
        "lm_eval_results": json.dumps(out["results"], default=str),
    }
    config = {"job": to_jsonable(cfg), "model": to_jsonable(model_cfg), "data": to_jsonable(data.config)}
    return BenchResult(kind="eval", config=config, metrics=metrics, info=info)

"""The suite file's pydantic models (`extra="forbid"` everywhere), `--set` overrides, and error paths.

A suite names an MLflow experiment, per-kind job sections (partial job configs: `train:`, `infer:`,
`dummy:`), a `model:` section (ModelOverrides applied before iso-sparse matching), resources per job
kind, and a `matrix` of families × presets × jobs × seeds × variants (a variant deep-merges its own
sections over the suite's). Job sections are typed by the job modules' dataclasses when those import.
"""

import functools
import typing
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from orchestrator import registry
from orchestrator.dataclass_models import Error, model_for

FORBID = ConfigDict(extra="forbid", protected_namespaces=())
GIB = 2**30


class ResourcesModel(BaseModel):
    """Per job (per worker when num_workers > 1). memory_gb is Ray's `memory` resource."""

    model_config = FORBID
    num_cpus: float | None = Field(None, ge=0)
    num_gpus: float | None = Field(None, ge=0)
    memory_gb: float | None = Field(None, gt=0)
    num_workers: int | None = Field(None, ge=1)
    placement: Literal["PACK", "STRICT_PACK", "SPREAD", "STRICT_SPREAD"] | None = None


def _model_section() -> type[BaseModel]:
    from workloads.jobs.setup import ModelOverrides

    return create_model(
        "ModelSection",
        __config__=FORBID,
        overrides=(model_for(ModelOverrides) | None, None),
        allocation_path=(str | None, None),
    )


def _job_section(kind: registry.JobKind) -> Any:
    """The partial config model of a job kind, without the fields the matrix sets (model, seed)."""
    try:
        cls, _ = kind.load()
    except ValueError:
        return dict[str, Any] | None  # kind unavailable: using it is reported as a suite error
    full = model_for(cls)
    skip = {*(registry.MODEL_FIELDS if kind.uses_model else ()), kind.seed_field}
    fields = {n: (f.annotation, None) for n, f in full.model_fields.items() if n not in skip}
    return create_model(f"{kind.name.title()}Section", __config__=FORBID, **fields) | None


@functools.cache
def suite_model() -> type[BaseModel]:
    """The whole suite's model, built once (job sections depend on which job modules import)."""
    sections = {name: (_job_section(kind), None) for name, kind in registry.JOBS.items()}
    model_section = _model_section()
    variant = create_model(
        "Variant",
        __config__=FORBID,
        name=(str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.+-]+$")),
        model=(model_section | None, None),
        resources=(dict[str, ResourcesModel] | None, None),
        **sections,
    )
    matrix = create_model(
        "Matrix",
        __config__=FORBID,
        families=(list[str], Field(["dense"], min_length=1)),
        presets=(list[str], Field(["debug"], min_length=1)),
        jobs=(list[str], Field(..., min_length=1)),
        seeds=(list[int], Field([0], min_length=1)),
        variants=(list[variant], Field(default_factory=lambda: [variant(name="base")], min_length=1)),
    )
    return create_model(
        "Suite",
        __config__=FORBID,
        experiment=(str | None, None),
        description=(str, ""),
        max_retries=(int, Field(1, ge=0)),
        on_oom=(Literal["fail", "halve_batch"], "fail"),  # orchestrator.scheduling.halved_micro_batch
        match_tolerance=(float, Field(0.02, gt=0, lt=1)),  # iso-sparse match, planned (L3_SPEC §5)
        resources=(dict[str, ResourcesModel] | None, None),
        model=(model_section | None, None),
        matrix=(matrix, ...),
        **sections,
    )


# -- errors ---------------------------------------------------------------------------------------------
def format_loc(loc: tuple[Any, ...]) -> str:
    """('matrix', 'presets', 1) → "matrix.presets[1]"."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _fields_at(model: Any, loc: tuple[Any, ...]) -> list[str]:
    """The keys a model accepts at `loc` (for did-you-mean on unknown keys); [] when unknown."""
    for part in loc:
        if isinstance(part, int):
            continue
        fields = getattr(model, "model_fields", None)
        if fields is None or part not in fields:
            return []
        model = _unwrap(fields[part].annotation)
    return list(getattr(model, "model_fields", {}))


def _unwrap(tp: Any) -> Any:
    for arg in typing.get_args(tp) or ():
        inner = _unwrap(arg)
        if hasattr(inner, "model_fields"):
            return inner
    return tp


def pydantic_errors(err: ValidationError, model: type[BaseModel]) -> list[Error]:
    out = []
    for e in err.errors():
        loc = tuple(e["loc"])
        if e["type"] == "extra_forbidden":
            known = _fields_at(model, loc[:-1])
            hint = registry.did_you_mean(loc[-1], known) if known else ""
            out.append((format_loc(loc), f"unknown key {loc[-1]!r}{hint}"))
        elif e["type"] == "union_tag_not_found":
            out.append((format_loc(loc), "needs a 'kind' key (builtin, text, parquet or hf)"))
        else:
            out.append((format_loc(loc), f"{e['msg']} (got {e.get('input')!r})"))
    return out


# -- --set overrides ------------------------------------------------------------------------------------
def apply_sets(raw: dict[str, Any], sets: list[str]) -> list[Error]:
    """Apply `a.b=value` overrides in place (value parsed as YAML; integer parts index lists)."""
    errors: list[Error] = []
    for item in sets:
        key, sep, text = item.partition("=")
        if not sep or not key:
            errors.append((f"--set {item}", "expected KEY=VALUE, e.g. train.steps=50"))
            continue
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as e:
            errors.append((f"--set {key}", f"value is not valid YAML: {e}"))
            continue
        node: Any = raw
        parts = key.split(".")
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list) and part.isdigit() and int(part) < len(node):
                index: Any = int(part)
            elif isinstance(node, dict):
                index = part
            else:
                errors.append((f"--set {key}", f"cannot descend into {'.'.join(parts[:i]) or 'the suite'}"))
                break
            if last:
                node[index] = value
            else:
                if isinstance(node, dict) and index not in node:
                    node[index] = {}
                node = node[index]
    return errors

"""Pydantic at the boundary: the suite file's models, validation of the workloads' own dataclasses, errors
with exact paths, and which section (the suite's or a variant's) a merged value came from.
Details: docs/orchestrator.md#orchestratorsuitesschema.
"""

import copy
import dataclasses
import functools
import re
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model

from orchestrator.suites import registry
from orchestrator.suites.spec import TIMINGS

Error = tuple[str, str]  # (path such as "matrix.variants[1].train.steps", message)
Loc = tuple[str | int, ...]
FORBID = ConfigDict(extra="forbid", protected_namespaces=())
GIB = 2**30


def _dataclasses_in(tp: Any) -> list[type]:
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return [tp]
    return [c for arg in typing.get_args(tp) for c in _dataclasses_in(arg)]


def _forbid_extra(cls: type, seen: set[type]) -> None:
    """Refuse unknown keys in `cls` and in every dataclass reachable from it (pydantic ignores them)."""
    if cls in seen:
        return
    seen.add(cls)
    cls.__pydantic_config__ = FORBID  # read by pydantic only; the dataclass itself is unchanged
    for hint in typing.get_type_hints(cls).values():
        for inner in _dataclasses_in(hint):
            _forbid_extra(inner, seen)


@functools.cache
def adapter(tp: Any) -> TypeAdapter:
    for cls in _dataclasses_in(tp):
        _forbid_extra(cls, set())
    return TypeAdapter(tp)


def validate(tp: Any, data: Any) -> tuple[Any, list[tuple[Loc, str]]]:
    """(the validated value, []) or (None, every error as (loc, message))."""
    try:
        return adapter(tp).validate_python(data), []
    except ValidationError as err:
        return None, errors_of(err, tp, data)


# -- errors ---------------------------------------------------------------------------------------------
def format_loc(loc: Loc) -> str:
    """('matrix', 'presets', 1) → "matrix.presets[1]"."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _kind_field(cls: Any) -> str | None:
    """The `kind` Literal of a tagged dataclass (a corpus source), else None."""
    hints = typing.get_type_hints(cls) if dataclasses.is_dataclass(cls) else {}
    args = typing.get_args(hints.get("kind"))
    return args[0] if len(args) == 1 and isinstance(args[0], str) else None


def _step(tp: Any, part: Any) -> Any:
    """The type one loc part below `tp` (a field of a dataclass or model, a list item, a dict value)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        return _step(args[0], part)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        return _step(members[0], part) if len(members) == 1 else None
    if dataclasses.is_dataclass(tp):
        return typing.get_type_hints(tp).get(part)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        field = tp.model_fields.get(part)
        return field.annotation if field else None
    if origin in (list, tuple) and isinstance(part, int):
        return args[0] if args else None
    return args[1] if origin is dict else None


def _tagged(tp: Any) -> dict[str, type]:
    """{class name: class} of the members of a union of `kind`-tagged dataclasses (pydantic's loc tags)."""
    members = [m for m in _dataclasses_in(tp) if _kind_field(m)]
    return {m.__name__: m for m in members} if len(members) > 1 else {}


def _child(data: Any, part: Any) -> Any:
    if isinstance(data, dict):
        return data.get(part)
    ok = isinstance(data, list | tuple) and isinstance(part, int) and part < len(data)
    return data[part] if ok else None


def _walk(tp: Any, data: Any, loc: Loc) -> tuple[Loc, Any, bool]:
    """(loc without union-member tags, the type there, whether the error belongs to a union member that the
    input's `kind` did not choose: pydantic tries every member of an untagged union)."""
    kept: list = []
    for part in loc:
        members = _tagged(tp)
        if members:
            chosen = members.get(part) if isinstance(part, str) else None
            if chosen is None or not isinstance(data, dict) or data.get("kind") != _kind_field(chosen):
                return tuple(kept), tp, True
            tp = chosen
            continue
        tp, data = _step(tp, part), _child(data, part)
        kept.append(part)
    return tuple(kept), tp, False


def _known_keys(tp: Any) -> list[str]:
    if dataclasses.is_dataclass(tp):
        return [f.name for f in dataclasses.fields(tp) if f.init]
    return list(tp.model_fields) if isinstance(tp, type) and issubclass(tp, BaseModel) else []


def errors_of(err: ValidationError, tp: Any, data: Any) -> list[tuple[Loc, str]]:
    """Pydantic errors as (loc, message): did-you-mean for unknown keys, one error for a missing or unknown
    source `kind`, and for a tagged union only the errors of the member its `kind` chose."""
    out: list[tuple[Loc, str]] = []
    for e in err.errors():
        loc, here, other_member = _walk(tp, data, tuple(e["loc"]))
        if other_member:
            node, kinds = value_at(data, loc), [_kind_field(m) for m in _tagged(here).values()]
            if not isinstance(node, dict) or node.get("kind") not in kinds:
                got = node.get("kind") if isinstance(node, dict) else node
                out.append((loc + ("kind",), f"must be one of {', '.join(kinds)} (got {got!r})"))
            continue
        if e["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
            known = _known_keys(_walk(tp, data, tuple(e["loc"])[:-1])[1])
            hint = registry.did_you_mean(loc[-1], known) if known else ""
            out.append((loc, f"unknown key {loc[-1]!r}{hint}"))
        elif e["type"] == "value_error":
            out.append((loc, str(e["ctx"]["error"]) if "ctx" in e else e["msg"]))
        elif e["type"] == "missing":
            out.append((loc, "required"))
        else:
            out.append((loc, f"{e['msg']} (got {e.get('input')!r})"))
    return list(dict.fromkeys(out))


def value_at(data: Any, loc: Loc) -> Any:
    for part in loc:
        data = _child(data, part)
    return data


# -- the suite file ---------------------------------------------------------------------------------------
class ResourcesModel(BaseModel):
    """Per job (per worker when num_workers > 1). memory_gb is Ray's `memory` resource."""

    model_config = FORBID
    num_cpus: float | None = Field(None, ge=0)
    num_gpus: float | None = Field(None, ge=0)
    memory_gb: float | None = Field(None, gt=0)
    num_workers: int | None = Field(None, ge=1)
    placement: Literal["PACK", "STRICT_PACK", "SPREAD", "STRICT_SPREAD"] | None = None


@functools.cache
def suite_model() -> type[BaseModel]:
    """The whole suite's model. Job sections are mappings here: each expanded job validates its merged
    section against its job kind's dataclass (`validate`), so that a variant may give only what it changes."""
    from workloads import api as workloads  # loaded when a suite is validated: start-up latency

    forbid = {"__config__": FORBID}
    model_section = create_model(
        "ModelSection",
        **forbid,
        overrides=(workloads.ModelOverrides | None, None),
        allocation_path=(str | None, None),
    )
    adapter(workloads.ModelOverrides)  # unknown override keys are refused
    sections = {name: (dict[str, Any] | None, None) for name in registry.JOBS}
    resources = (dict[str, ResourcesModel] | None, None)
    variant = create_model(
        "Variant",
        **forbid,
        name=(str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.+-]+$")),
        families=(list[str] | None, Field(None, min_length=1)),  # a subset of matrix.families (default: all)
        model=(model_section | None, None),
        resources=resources,
        **sections,
    )
    matrix = create_model(
        "Matrix",
        **forbid,
        families=(list[str], Field(["dense"], min_length=1)),
        presets=(list[str], Field(["debug"], min_length=1)),
        jobs=(list[str], Field(..., min_length=1)),
        seeds=(list[int], Field([0], min_length=1)),
        variants=(list[variant], Field(default_factory=lambda: [variant(name="base")], min_length=1)),
    )
    return create_model(
        "Suite",
        **forbid,
        experiment=(str | None, None),
        description=(str, ""),
        max_retries=(int, Field(1, ge=0)),
        on_oom=(Literal["fail", "halve_batch"], "fail"),  # orchestrator.runs.outcomes.halved_micro_batch
        match_tolerance=(float, Field(0.02, gt=0, lt=1)),  # iso-sparse match, planned (L3_SPEC §5)
        timing=(dict[str, Literal[TIMINGS]] | None, None),  # job kind → orchestrator.suites.spec.Timing
        resources=resources,
        model=(model_section | None, None),
        matrix=(matrix, ...),
        **sections,
    )


# -- merging sections, and where a value was written -------------------------------------------------
def merge(base: Any, over: Any) -> Any:
    """`over` deep-merged onto `base`; a mapping whose `kind` changes (a corpus source) is replaced whole,
    since the other kind's fields mean nothing to it."""
    if (
        isinstance(base, dict)
        and isinstance(over, dict)
        and base.get("kind", over.get("kind")) == over.get("kind", base.get("kind"))
    ):
        out = dict(base)
        for key, value in over.items():
            out[key] = merge(base.get(key), value) if key in base else copy.deepcopy(value)
        return out
    return copy.deepcopy(over)


def owned_by(section: Any, loc: Loc) -> bool:
    """Whether the value at `loc` of a merged section came from `section` (the variant's) rather than from
    the suite's: the variant gave it, or gave a non-mapping value above it."""
    node = section
    for part in loc:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
        if not isinstance(node, dict):
            return True
    return True


def parse_loc(text: str) -> Loc:
    """ "data.source.paths[0]" → ("data", "source", "paths", 0)."""
    return tuple(int(p) if p.isdigit() else p for p in re.findall(r"[^.\[\]]+", text))


@dataclass(frozen=True)
class Where:
    """Where a job's settings were written: in the suite's `<kind>:` / `model:` section or the variant's
    (`matrix.variants[i].<kind>`), told apart per field."""

    kind: str
    variant_path: str
    variant: dict[str, Any]

    def path(self, field: str | Loc) -> str:
        """The suite path of a job-config field given as a loc or as text ("data.source.paths[0]")."""
        loc = parse_loc(field) if isinstance(field, str) else tuple(field)
        key = "model" if loc and loc[0] in ("overrides", "allocation_path") else self.kind
        mine = owned_by(self.variant.get(key) or {}, loc)
        return format_loc((f"{self.variant_path}.{key}" if mine else key, *loc))


def pruned(raw: dict[str, Any], locs: list[Loc]) -> dict[str, Any]:
    """A copy of the suite without the values at `locs` (already reported), so that expanding the rest can
    still find the errors elsewhere (a bad seed must not hide a bad job section)."""
    data = copy.deepcopy(raw)
    # A bad item of a list of names or seeds drops the list (its default applies), one of variants the item.
    scalar_item = lambda loc: isinstance(loc[-1], int) and not isinstance(value_at(raw, loc), dict)  # noqa: E731
    locs = [loc[:-1] if scalar_item(loc) else loc for loc in locs if loc]
    for loc in sorted(set(locs), key=lambda loc: tuple(map(str, loc)), reverse=True):  # items last-first
        parent = data
        for part in loc[:-1]:
            parent = parent[part] if isinstance(parent, dict | list) else None
        if isinstance(parent, dict):
            parent.pop(loc[-1], None)
        elif isinstance(parent, list) and isinstance(loc[-1], int) and loc[-1] < len(parent):
            del parent[loc[-1]]
    return data


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

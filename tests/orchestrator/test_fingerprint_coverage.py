"""Every leaf field of every job config is in the fingerprint, the MLflow params and their round trip.

The cases are generated from the dataclasses: each leaf (model, data, optimizer, L3, MoE, SCONE, ... of
train, infer, dummy and any kind registered later, for every model family) is changed to another value
the config accepts, and the change must move the fingerprint, show in the params, and come back from the
params as the same config. A field with no generated valid value fails the test until ALTERNATIVES names
one, so a field added tomorrow is covered (or flagged) the day it lands.
"""

import dataclasses
import itertools
import textwrap
import types
import typing
from typing import Annotated, Any, Literal, Union

import pytest
import yaml

from orchestrator.runs.tracking import Tracker, flatten
from orchestrator.suites import registry
from orchestrator.suites.expansion import load_suite
from orchestrator.suites.fingerprint import code_version, fingerprint
from orchestrator.suites.schema import ResourcesModel, validate
from results import names
from workloads.jobs.evaluate import EvalTask
from workloads.jobs.result import to_jsonable
from workloads.models.config import Family

FAMILIES = typing.get_args(Family)
DATA = "{source: {kind: builtin, content: docs}, max_documents: 300}"
SUITE = f"""
experiment: coverage
matrix: {{jobs: [{", ".join(registry.JOBS)}], families: [{", ".join(FAMILIES)}], presets: [debug]}}
train: {{steps: 3, batch_size: 2, data: {DATA}}}
infer: {{data: {DATA}}}
eval: {{tasks: [{{name: mc, path: TASKS}}]}}
"""
# field name → values to try first where the generic ones (type-derived) are not accepted
ALTERNATIVES: dict[str, list[Any]] = {
    "preset": ["tiny"],
    "content": ["stdlib", "mixed"],
    "encoding": ["latin-1"],
    "device": ["cuda"],
}
# field name → (sibling, attribute of the model it must then equal): a change that needs another with it
COUPLED = {"tied": ("d_emb", "dim")}


@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
    path = tmp_path_factory.mktemp("coverage") / "coverage.yaml"
    tasks = path.with_name("mc.jsonl")
    tasks.write_text('{"question": "q", "choices": ["a", "b"], "answer": 0}\n')
    path.write_text(textwrap.dedent(SUITE).replace("TASKS", str(tasks)))
    ALTERNATIVES["tasks"] = [(EvalTask("other", str(tasks), num_fewshot=1),)]  # a tuple of task dataclasses
    suite = load_suite(path)
    kinds = {job.kind for job in suite.jobs}
    assert kinds == {k for k, v in registry.JOBS.items() if v.available()}, kinds
    return suite.jobs


# -- generating the values --------------------------------------------------------------------------------
def _strip(tp: Any) -> Any:
    while typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


def samples(cls: type) -> list[Any]:
    """Instances of a dataclass: its defaults, else its required fields filled with generated values."""
    hints = typing.get_type_hints(cls, include_extras=True)
    required = [f for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING]  # fmt: skip
    args = {}
    for f in required:
        for value in candidates(None, hints[f.name], f.name):
            args[f.name] = value
            break
    try:
        return [cls(**args)]
    except (TypeError, ValueError):
        return []


def candidates(value: Any, tp: Any, name: str) -> list[Any]:
    """Values of type `tp` other than `value`, most plausible first (the config decides which are valid)."""
    out = [v for v in ALTERNATIVES.get(name, []) if v != value]
    tp = _strip(tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if _is_union(tp):
        for arg in args:
            arg = _strip(arg)
            if arg is type(None):
                out += [None] if value is not None else []
            elif dataclasses.is_dataclass(arg):
                out += [] if isinstance(value, arg) else samples(arg)
            else:
                present = value is not None and _fits(value, arg)
                out += candidates(value if present else None, arg, name)
    elif origin is Literal:
        out += [option for option in args if option != value]
    elif tp is bool:
        out += [not value] if value is not None else [True, False]
    elif tp is int:
        near = [value + 1, value * 2, value - 1, value + 7] if isinstance(value, int) else []
        out += [v for v in [*near, 1, 2, 8, 64, 512] if v != value]
    elif tp is float:
        near = [value * 2, value / 2, value + 0.5] if isinstance(value, float | int) else []
        out += [v for v in [*near, 0.5, 0.25, 0.01, 2.0] if v != value]
    elif tp is str:
        out += [f"{value}x" if value else "x", "x"]
    elif origin is tuple:
        out += _tuples(value or (), args, name)
    elif origin is dict and dataclasses.is_dataclass(_strip(args[1])):
        out += [{"extra": s} for s in samples(_strip(args[1]))] if not value else [{}]
    elif origin is dict:
        out += [{"extra": v} for v in candidates(None, args[1], name)[:1]] if not value else [{}]
    return out


def _fits(value: Any, tp: Any) -> bool:
    tp = _strip(tp)
    origin = typing.get_origin(tp)
    if origin is Literal:
        return value in typing.get_args(tp)
    if tp is float:
        return isinstance(value, float | int) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, origin or tp) if isinstance(origin or tp, type) else False


def _tuples(value: tuple, args: tuple, name: str) -> list[tuple]:
    if len(args) == 2 and args[1] is Ellipsis:  # tuple[X, ...]: drop one, add one, change the first
        more = candidates(value[-1] if value else None, args[0], name)[:2]
        out = [value[:-1]] if value else []
        out += [(*value, extra) for extra in more]
        out += [(first, *value[1:]) for first in more] if value else []
        return [t for t in out if t != value]
    out = []
    for i, arg in enumerate(args):  # fixed length: change one position
        out += [(*value[:i], v, *value[i + 1 :]) for v in candidates(value[i], arg, name)[:3]]
    return out


# -- walking the leaves -----------------------------------------------------------------------------------
def leaves(obj: Any, path: tuple = ()) -> typing.Iterator[tuple[tuple, Any, Any, str]]:
    """(path of keys, value, type hint, field name) of every leaf; a nested dataclass is walked into (and
    is a leaf too when another alternative of its union can replace it), a dict of dataclasses per key."""
    hints = typing.get_type_hints(type(obj), include_extras=True)
    for f in dataclasses.fields(obj):
        value, tp, here = getattr(obj, f.name), hints[f.name], (*path, f.name)
        tag = typing.get_origin(_strip(tp)) is Literal and len(typing.get_args(_strip(tp))) == 1
        if tag:  # a tagged union's `kind`: the alternative's own field is walked with that alternative
            continue
        if dataclasses.is_dataclass(value):
            if _is_union(_strip(tp)):
                yield here, value, tp, f.name
            yield from leaves(value, here)
        elif isinstance(value, dict) and value and dataclasses.is_dataclass(next(iter(value.values()))):
            for key, item in value.items():
                yield from leaves(item, (*here, key))
            yield here, value, tp, f.name
        else:
            yield here, value, tp, f.name


def leaf_id(config: Any, path: tuple) -> str:
    """The field a path names, whatever the dict keys on the way ("TrainJobConfig.grad_accum")."""
    parts, obj = [type(config).__name__], config
    for key in path:
        if isinstance(obj, dict):
            obj = obj[key]
            continue
        parts.append(key)
        obj = getattr(obj, key)
    return ".".join(parts)


def get(obj: Any, path: tuple) -> Any:
    for key in path:
        obj = obj[key] if isinstance(obj, dict) else getattr(obj, key)
    return obj


def put(data: dict, path: tuple, value: Any) -> dict:
    """A copy of nested plain data with the value at path replaced."""
    if not path:
        return value
    return {**data, path[0]: put(data.get(path[0], {}), path[1:], value)}


def unflatten(params: dict[str, str]) -> dict:
    """MLflow's flat string params (tracking.flatten) → nested plain data ("None" is Python's None)."""
    out: dict = {}
    for key, text in params.items():
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = None if text == "None" else yaml.safe_load(text)
    return out


def changed(job, path: tuple, value: Any):
    """The job's config with `path` set to `value` through the suite's validation, or None if invalid."""
    cls = type(job.config)
    data = put(to_jsonable(job.config), path, to_jsonable(value))
    if path[-1] in COUPLED and job.config.model is not None:
        sibling, model_attr = COUPLED[path[-1]]
        data = put(data, (*path[:-1], sibling), getattr(job.config.model, model_attr))
    config, errors = validate(cls, data)
    if errors or get(config, path) != value:
        return None  # not a value the config accepts (or one it normalizes back)
    return config


# -- the test ---------------------------------------------------------------------------------------------
def bases(jobs):
    """Every expanded job, plus each with another alternative of a union field (a text or parquet corpus
    source instead of the built-in one), so the fields of every alternative are walked."""
    for job in jobs:
        assert fingerprint(job.resolved, code_version()) == job.fingerprint, job.name  # the same formula
        yield job
        for path, value, tp, name in list(leaves(job.config)):
            if dataclasses.is_dataclass(value) and _is_union(_strip(tp)):
                for other in candidates(value, tp, name):
                    config = changed(job, path, other) if dataclasses.is_dataclass(other) else None
                    if config is not None:
                        yield dataclasses.replace(job, config=config, resolved={**job.resolved,
                                                  "job": to_jsonable(config)})  # fmt: skip


def test_every_leaf_field_moves_the_fingerprint_shows_in_params_and_round_trips(jobs):
    code = code_version()
    covered, seen, peers = set(), {}, {}
    for job in bases(jobs):
        before = flatten(job.resolved)
        for path, value, tp, name in leaves(job.config):
            field = leaf_id(job.config, path)
            seen.setdefault(field, path)
            peers.setdefault(field, []).append((job, value))
            for other in candidates(value, tp, name):
                config = changed(job, path, other)
                if config is None:
                    continue
                resolved = {**job.resolved, "job": to_jsonable(config)}
                assert get(resolved["job"], path) == to_jsonable(other), f"{field} is not serialized"
                assert fingerprint(resolved, code) != fingerprint(job.resolved, code), field
                params = flatten(resolved)
                assert params != before, f"{field} does not show in the MLflow params"
                rebuilt, errors = validate(type(config), unflatten(params)["job"])
                assert errors == [] and rebuilt == config, f"{field} does not round-trip: {errors}"
                covered.add(field)
                break
    for field in set(seen) - covered:  # fields only valid together with others (the model's family and
        path = seen[field]  # its sparse part): two expanded jobs that differ there
        for (a, value_a), (b, value_b) in itertools.combinations(peers[field], 2):
            if value_a != value_b and a.name.split("/")[0] == b.name.split("/")[0]:
                for job, value in ((a, value_a), (b, value_b)):
                    assert get(job.resolved["job"], path) == to_jsonable(value), f"{field} is not serialized"
                assert fingerprint(a.resolved, code) != fingerprint(b.resolved, code), field
                covered.add(field)
                break
    missing = sorted(set(seen) - covered)
    assert not missing, f"no valid other value generated for {missing}: name one in ALTERNATIVES"
    assert {"TrainJobConfig.model.l3.cap", "TrainJobConfig.grad_accum", "InferJobConfig.model.moe.top_k",
            "TrainJobConfig.model.scone.n_fgrams", "TrainJobConfig.model.family"} <= covered  # fmt: skip


def test_the_shipped_config_round_trips_through_a_real_mlflow_store(jobs, tmp_path):
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    parent = tracker.start_suite("coverage", "coverage", {})
    run_ids = {tracker.start_job("coverage", parent, job, 1, {}): job for job in jobs}
    tracker.end_suite(parent, "FINISHED")
    raw = tracker.search("coverage").set_index("run_id")
    prefix = names.param_column("")
    for run_id, job in run_ids.items():
        params = {k.removeprefix(prefix): v for k, v in raw.loc[run_id].items()
                  if k.startswith(prefix) and isinstance(v, str)}  # fmt: skip
        assert params == flatten(job.resolved), job.name
        rebuilt, errors = validate(type(job.config), unflatten(params)["job"])
        assert errors == [] and rebuilt == job.config, job.name


def test_of_the_resources_only_the_world_size_moves_the_fingerprint(tmp_path):
    """num_workers changes what runs (the global batch; the steps of a token budget); the others only say
    where it runs (the hardware is recorded with the run), so changing them keeps finished runs valid."""
    path = tmp_path / "resources.yaml"
    path.write_text("experiment: resources\nmatrix: {jobs: [dummy], presets: [debug]}\n")
    (base,) = load_suite(path).jobs
    moved = set()
    for name, info in ResourcesModel.model_fields.items():
        for value in [v for v in candidates(None, info.annotation, name) if v is not None]:
            (job,) = load_suite(path, [f"resources.dummy.{name}={value}"]).jobs
            if job.resources != base.resources:
                break
        assert job.resources != base.resources, name
        if job.fingerprint != base.fingerprint:
            moved.add(name)
            assert flatten(job.resolved)[name] == str(value)
    assert moved == {"num_workers"}

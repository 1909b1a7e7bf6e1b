"""Field constraints of the config dataclasses, declared once with annotated-types and checked once.
Details: docs/workloads.md#workloadsfields."""

import dataclasses
import functools
import types
import typing
from typing import Annotated, Any, Literal

try:  # the orchestrator's pydantic reads these same markers; the bare GPU image has no annotated-types
    from annotated_types import Ge, Gt, Le, Lt, MinLen, Predicate
except ImportError:  # pragma: no cover - exercised by tests/workloads/test_gpu_check.py's import blocker

    @dataclasses.dataclass(frozen=True)
    class Ge:
        ge: Any

    @dataclasses.dataclass(frozen=True)
    class Gt:
        gt: Any

    @dataclasses.dataclass(frozen=True)
    class Le:
        le: Any

    @dataclasses.dataclass(frozen=True)
    class Lt:
        lt: Any

    @dataclasses.dataclass(frozen=True)
    class MinLen:
        min_length: int

    @dataclasses.dataclass(frozen=True)
    class Predicate:
        func: Any


PosInt = Annotated[int, Ge(1)]
NonNegInt = Annotated[int, Ge(0)]
PosFloat = Annotated[float, Gt(0)]
NonNegFloat = Annotated[float, Ge(0)]
UnitFraction = Annotated[float, Gt(0), Lt(1)]  # strictly inside (0, 1)


def strictly_increasing(values: tuple) -> bool:
    return all(a < b for a, b in zip(values, values[1:], strict=False))


_TESTS = {  # constraint class: (its bound's attribute, test, message)
    Ge: ("ge", lambda v, b: v >= b, "must be >= {}"),
    Gt: ("gt", lambda v, b: v > b, "must be > {}"),
    Le: ("le", lambda v, b: v <= b, "must be <= {}"),
    Lt: ("lt", lambda v, b: v < b, "must be < {}"),
}


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


def _violation(tp: Any, value: Any) -> str | None:
    """Why `value` breaks the constraints in annotation `tp` (None: it does not)."""
    if value is None:
        return None
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Annotated:
        for meta in tp.__metadata__:
            if isinstance(meta, MinLen) and len(value) < meta.min_length:
                return f"must hold at least {meta.min_length} item(s)"
            if isinstance(meta, Predicate) and not meta.func(value):
                return f"must be {meta.func.__name__.replace('_', ' ')}"
            for kind, (attr, ok, text) in _TESTS.items():
                if isinstance(meta, kind):
                    bound = getattr(meta, attr)
                    if not ok(value, bound):  # NaN fails every comparison, so it is refused too
                        return text.format(bound)
        return _violation(args[0], value)
    if origin is Literal:
        return None if value in args else f"must be one of {', '.join(map(repr, args))}"
    if origin in (typing.Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        return _violation(members[0], value) if len(members) == 1 else None
    if origin is tuple and isinstance(value, tuple):
        item_types = [args[0]] * len(value) if len(args) == 2 and args[1] is Ellipsis else args
        return next((v for v in map(_violation, item_types, value) if v), None)
    return None


def check_fields(obj: Any) -> None:
    """Raise ValueError for the first field of dataclass `obj` outside its declared bounds."""
    hints = _hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        why = _violation(hints[f.name], value)
        if why:
            raise ValueError(f"{type(obj).__name__}.{f.name} {why}, got {value!r}")

"""Pydantic v2 mirrors of the workloads' frozen config dataclasses, and the way back.

`model_for(cls, partial=True)` builds (once) a pydantic model with `extra="forbid"` whose fields mirror the
dataclass's type hints; nested dataclasses become nested models, a union of dataclasses that carry a
`kind` ClassVar (the corpus sources) becomes a union discriminated by a `kind` key. Partial models make
every field optional, so a suite can give only what it changes. `build(cls, data, path)` turns a
validated partial dict back into the frozen dataclass; the dataclass's own `__post_init__` ValueErrors
come back as (path, message) errors instead of being raised, so a suite can report all of them at once.
"""

import dataclasses
import functools
import types
import typing
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Tag, create_model

Error = tuple[str, str]  # (path such as "train.data.source", message)

_FORBID = ConfigDict(extra="forbid", protected_namespaces=(), arbitrary_types_allowed=False)


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _kind_of(cls: type) -> str | None:
    kind = getattr(cls, "kind", None)
    return kind if isinstance(kind, str) and "kind" not in {f.name for f in dataclasses.fields(cls)} else None


def _discriminated(members: list[type]) -> Any:
    """A union of dataclasses told apart by their `kind` ClassVar: the YAML says `kind: text`."""

    def pick(value: Any) -> str | None:
        return value.get("kind") if isinstance(value, Mapping) else getattr(value, "kind", None)

    tagged = tuple(Annotated[model_for(m, partial=False), Tag(_kind_of(m))] for m in members)
    return Annotated[typing.Union[tagged], Discriminator(pick)]  # noqa: UP007 (a runtime-built union)


def _translate(tp: Any) -> Any:
    """A dataclass field type → the pydantic type that validates its YAML form."""
    if _is_dataclass_type(tp):
        return model_for(tp, partial=False)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        kinds = [a for a in args if _is_dataclass_type(a) and _kind_of(a)]
        rest = [_translate(a) for a in args if a not in kinds]
        if len(kinds) > 1:
            rest.insert(0, _discriminated(kinds))
        elif kinds:
            rest.insert(0, _translate(kinds[0]))
        return rest[0] if len(rest) == 1 else typing.Union[tuple(rest)]  # noqa: UP007
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple[_translate(args[0]), ...]
        return tuple[tuple(_translate(a) for a in args)] if args else tuple
    if origin in (list, dict, Mapping):
        return origin[tuple(_translate(a) for a in args)] if args else origin
    if origin is Literal or tp in (int, float, bool, str, Any, type(None)):
        return tp
    return Any  # a type the YAML cannot spell (a callable, ...): passed through, the dataclass checks it


@functools.cache
def model_for(cls: type, partial: bool = True) -> type[BaseModel]:
    """The pydantic mirror of dataclass `cls`. partial: every field optional (for suite sections)."""
    hints = typing.get_type_hints(cls)
    fields: dict[str, Any] = {}
    kind = _kind_of(cls)
    if kind is not None:
        fields["kind"] = (Literal[kind], kind)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp = _translate(hints[f.name])
        has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        fields[f.name] = (tp, None) if partial or has_default else (tp, ...)
    name = f"{cls.__name__}{'Partial' if partial else ''}Model"
    model = create_model(name, __config__=_FORBID, __doc__=cls.__doc__, **fields)
    model.__isosparse_dataclass__ = cls
    return model


def dump(model: BaseModel) -> dict[str, Any]:
    """Only the fields the YAML set (so dataclass defaults stay the single source of defaults)."""
    return model.model_dump(exclude_unset=True, mode="python")


def _value(tp: Any, value: Any, path: str, errors: list[Error]) -> Any:
    """Convert validated plain data of type `tp` into dataclasses (None marks a failed nested build)."""
    if value is None or (dataclasses.is_dataclass(value) and not isinstance(value, type)):
        return value  # None, or already built
    if _is_dataclass_type(tp):
        return build(tp, value, path, errors)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if isinstance(value, Mapping):
            classes = [a for a in args if _is_dataclass_type(a)]
            chosen = next((c for c in classes if _kind_of(c) == value.get("kind")), None)
            chosen = chosen or (classes[0] if len(classes) == 1 else None)
            if chosen is not None:
                return build(chosen, value, path, errors)
        return value
    if origin in (dict, Mapping) and isinstance(value, Mapping) and len(args) == 2:
        return {k: _value(args[1], v, f"{path}.{k}", errors) for k, v in value.items()}
    if origin is tuple and isinstance(value, list | tuple):
        inner = args[0] if len(args) == 2 and args[1] is Ellipsis else None
        return tuple(_value(inner or args[i], v, f"{path}[{i}]", errors) for i, v in enumerate(value))
    return value


def build(cls: type, data: Mapping[str, Any], path: str, errors: list[Error]) -> Any:
    """The dataclass `cls` from validated (partial) data; None with errors appended when it cannot be built.

    Missing fields take the dataclass defaults; a missing required field, or a ValueError from the
    dataclass's `__post_init__`, becomes an error at `path`.
    """
    hints = typing.get_type_hints(cls)
    kwargs, failed = {}, False
    for name, value in data.items():
        if name == "kind" and _kind_of(cls):
            continue
        n_errors = len(errors)
        kwargs[name] = _value(hints[name], value, f"{path}.{name}" if path else name, errors)
        failed |= len(errors) > n_errors
    if failed:
        return None
    missing = [
        f.name
        for f in dataclasses.fields(cls)
        if f.init
        and f.name not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        errors.append((path, f"{cls.__name__} needs {', '.join(missing)}"))
        return None
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as e:
        errors.append((path, str(e)))
        return None


def to_plain(obj: Any) -> Any:
    """A dataclass (tree) → the plain dict/list form `build` accepts (tuples become lists, kind kept)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {"kind": obj.kind} if _kind_of(type(obj)) else {}
        out.update({f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init})
        return out
    if isinstance(obj, Mapping):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_plain(v) for v in obj]
    return obj

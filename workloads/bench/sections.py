"""The benchmark sections: name -> "module:function", the function `(BenchContext) -> list[Row]`.
Details: docs/workloads.md#workloadsbenchsections."""

import importlib
from collections.abc import Callable

SECTIONS: dict[str, str] = {
    "layer": "workloads.bench.layer:rows",
    "train": "workloads.bench.train:rows",
    "infer": "workloads.bench.infer:rows",
    "scone": "workloads.bench.scone:rows",
    "lzw": "workloads.bench.lzw:rows",
    "lookup": "workloads.bench.l3:lookup",
    "offload": "workloads.bench.l3:offload",
    "l3_train": "workloads.bench.l3:l3_train",
    "orchestration": "workloads.bench.orchestration:rows",
}


def resolve(name: str) -> Callable:
    """The section function of `name`; ValueError naming the known ones otherwise."""
    if name not in SECTIONS:
        raise ValueError(f"unknown benchmark section {name!r}; known: {', '.join(SECTIONS)} or 'all'")
    module, _, func = SECTIONS[name].partition(":")
    return getattr(importlib.import_module(module), func)

"""Checks that need the real inputs, run by `load_suite` before anything is submitted: duplicate variant
names, each local corpus split by the jobs' own rule (an empty train or validation split), and SCONE's
f-gram supply (the discovery itself, on the job's tokens, cached for the job). Each gives (path, message).
"""

import functools
from collections import Counter

from orchestrator.suites.matching import REMOTE_SOURCES  # the job downloads these: not read here
from orchestrator.suites.schema import Error


def variant_name_errors(variants: list) -> list[Error]:
    """A variant name given twice would make two jobs one (same name) and a phantom row in `compare`."""
    names = [v.get("name") if isinstance(v, dict) else None for v in variants]
    seen = Counter(n for n in names if isinstance(n, str))
    errors = []
    for i, name in enumerate(names):
        if seen.get(name, 0) > 1 and names.index(name) != i:
            first = names.index(name)
            msg = f"duplicate variant name {name!r} (also matrix.variants[{first}]): each variant needs "
            errors.append(
                (f"matrix.variants[{i}].name", msg + "its own name (its jobs and rows are named by it)")
            )
    return errors


@functools.cache
def _split_problem(data_cfg) -> str | None:
    from workloads.data.pipeline import prepare_corpus

    try:
        prepare_corpus(data_cfg)  # the split spool, built here into the cache the job reads
    except (ValueError, OSError) as err:
        return str(err)
    return None


@functools.cache
def _scone_problem(data_cfg, model_cfg) -> str | None:
    from workloads.jobs.setup import prepare_data, resolve_scone

    try:
        resolve_scone(model_cfg, prepare_data(data_cfg, model_cfg))  # discovery: cached for the job
    except (ValueError, OSError) as err:
        return str(err)
    return None


def corpus_problems(cfg) -> list[Error]:
    """(field path in the job config, message): each local corpus of `cfg` (its `data`, its `eval_data`)
    whose split leaves the train or validation split empty; for a SCONE model, too few f-gram candidates."""
    sources = [("data", getattr(cfg, "data", None))]
    sources += [(f"eval_data.{name}", d) for name, d in (getattr(cfg, "eval_data", None) or {}).items()]
    local = [(where, d) for where, d in sources if d is not None and d.source.kind not in REMOTE_SOURCES]
    problems = [(where, msg) for where, d in local if (msg := _split_problem(d)) is not None]
    model = getattr(cfg, "model", None)
    scone = getattr(model, "scone", None) is not None and hasattr(cfg, "data_config")
    if not problems and scone and local and local[0][0] == "data":
        msg = _scone_problem(cfg.data_config(), model)
        problems += [("model.scone.n_fgrams", msg)] if msg else []
    return problems

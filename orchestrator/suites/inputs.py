"""Checks that need the real inputs, run by `load_suite` before anything is submitted: duplicate variant
names, each local corpus split by the jobs' own rule (an empty train or validation split), and SCONE's
f-gram supply (the discovery itself, on the job's tokens, cached for the job). Each gives (path, message).
"""

from collections import Counter

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


def corpus_problems(cfg) -> list[Error]:
    """(field path in the job config, message): each local corpus of `cfg` (its `data`, its `eval_data`)
    whose split leaves the train or validation split empty; for a SCONE model, too few f-gram candidates.
    Remote corpora (`group.REMOTE_SOURCES`) only the job downloads: they are not read here."""
    from workloads import group  # torch: loaded when a suite is expanded, not by every reader

    sources = [("data", getattr(cfg, "data", None))]
    sources += [(f"eval_data.{name}", d) for name, d in (getattr(cfg, "eval_data", None) or {}).items()]
    local = [
        (where, d) for where, d in sources if d is not None and d.source.kind not in group.REMOTE_SOURCES
    ]
    problems = [(where, msg) for where, d in local if (msg := group.input_problem(d)) is not None]
    model = getattr(cfg, "model", None)
    scone = getattr(model, "scone", None) is not None and hasattr(cfg, "data_config")
    if not problems and scone and local and local[0][0] == "data":
        msg = group.input_problem(cfg.data_config(), cfg.model_spec(), model)
        problems += [("model.scone.n_fgrams", msg)] if msg else []
    return problems

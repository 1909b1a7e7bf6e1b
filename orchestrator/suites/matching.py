"""A comparison group's models (`workloads.group`) as the suite reports them: errors at their suite paths,
the planned accounting (L3_SPEC §5) logged as match/<key>."""

from orchestrator.suites.schema import Error
from workloads import api as workloads


def override_errors(overrides: dict, families: list[str], path: str) -> list[Error]:
    """Overrides (and an allocation file) for a family the matrix does not run would silently do nothing."""
    from workloads import group  # torch: loaded when a suite is expanded, not by every reader

    errors = []
    for name, applies_to in group.unused_overrides(overrides, families):
        where = path if name == "allocation_path" else f"{path}.overrides"
        what = " or ".join(map(repr, applies_to))
        errors.append((f"{where}.{name}", f"applies to family {what}, which matrix.families lacks"))
    return errors


def group_models(section: dict, preset: str, families: list[str], data_cfg, path: str, errors: list[Error]):
    """{family: `workloads.group.Member`} of one comparison group on `data_cfg`; None, with the error at its
    path, when a match is impossible."""
    from workloads import group

    try:
        return group.prepare_group(
            preset, families, section.get("overrides") or {}, section.get("allocation_path"), data_cfg
        )
    except group.FieldError as e:  # the model's own fields (the job reports its data at the data's path)
        errors.append((f"{path}.{e.field}", e.message))
        return None
    except ValueError as e:
        errors.append((path, str(e)))
        return None


def tolerance_errors(models: dict, families: list[str], group: str, tolerance: float, path: str) -> list:
    """One error per family of the group whose planned active or total error exceeds `tolerance`."""
    errors = []
    for family in families:
        planned = match(models, family)
        for key, ref in (("active_rel_err", "dense"), ("total_rel_err", "l3")):
            err = planned.get(key)
            if err is None or abs(err) <= tolerance:
                continue
            what = "active" if key == "active_rel_err" else "total"
            mine, theirs = models[family].params, models[ref].params
            n_mine, n_ref = (mine.active, theirs.active) if what == "active" else (mine.total, theirs.total)
            off = f"{family} {what} {n_mine:,} vs {ref} {n_ref:,} is {err:+.2%} off"
            errors.append((path, f"group {group}: {off}, over the match_tolerance {tolerance:.2%}"))
    return errors


def match(models: dict, family: str) -> dict[str, float]:
    """The planned accounting of `family` in its group (L3_SPEC §5), logged as match/<key>."""
    count = models[family].params
    dense, l3 = models["dense"].params, models["l3"].params
    out = {
        "params_active": float(count.active),
        "params_active_max": float(count.active_max),
        "params_active_min": float(count.active_min),
        "params_total": float(count.total),
        "sparsity": count.total / count.active,
        "active_rel_err": count.active / dense.active - 1.0,
    }
    if any(m.params.estimated for m in models.values()):  # a model-free group: no corpus to weight L3 rows by
        out["estimated"] = 1.0
    if family in workloads.EXPERT_FAMILIES:
        out["total_rel_err"] = count.total / l3.total - 1.0
    return out

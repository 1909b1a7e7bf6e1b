"""Suite YAML → validated spec → expanded, fingerprinted `JobSpec`s (DESIGN.md "Data flow of one suite").

`load_suite(path, sets)` validates everything it can before raising one `SuiteError` listing every
problem with its path: structure and types (pydantic), unknown presets / families / job kinds (with
did-you-mean), the job dataclasses' own checks, and iso-sparse matches that cannot be made. Expansion:
for every (seed, variant, preset) comparison group the families are matched to each other through
`workloads.jobs.setup.resolve_model_config` (iso-active with the dense base, MoE iso-total with the L3
model of that group: its l3_* overrides and allocation file included). L3 rows per token are weighted by
the corpus of the job's own data (its tokenizer and LZW allocation are prepared here, into the same cache
the job reads), so the planned numbers (`JobSpec.match`) are the ones the job will measure. A group whose
planned active or total error exceeds `match_tolerance` (default 2%) is refused. Identical resolved jobs
(same fingerprint) are kept once.
"""

import copy
import functools
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from orchestrator import registry
from orchestrator.dataclass_models import Error, build, dump, to_plain
from orchestrator.fingerprint import code_version, fingerprint
from orchestrator.spec import JobSpec, Resources
from orchestrator.suite_schema import GIB, apply_sets, pydantic_errors, suite_model

SUITES_DIR = Path(__file__).resolve().parent.parent / "suites"
L3_ONLY = ("l3_",)
MOE_ONLY = ("moe_",)
MODEL_FAMILIES = ("l3", "moe")  # the families whose models depend on the L3 template (MoE: iso-total)
REMOTE_SOURCES = ("hf",)  # corpora not prepared at validation (network, size): planned numbers estimated


class SuiteError(ValueError):
    """Every problem found in a suite, each as (path, message)."""

    def __init__(self, source: str, errors: list[Error]):
        self.source, self.errors = source, list(dict.fromkeys(errors))
        lines = [f"  {path}: {msg}" if path else f"  {msg}" for path, msg in self.errors]
        super().__init__(f"{source}: {len(self.errors)} error(s)\n" + "\n".join(lines))


@dataclass(frozen=True)
class Suite:
    name: str
    path: str
    experiment: str
    description: str
    jobs: tuple[JobSpec, ...]
    raw: dict[str, Any]


def resolve_path(suite: str) -> Path:
    """A path, or the name of a shipped suite ("quickstart" → suites/quickstart.yaml)."""
    path = Path(suite)
    if path.is_file():
        return path
    shipped = SUITES_DIR / f"{suite}.yaml"
    if shipped.is_file():
        return shipped
    known = [p.stem for p in sorted(SUITES_DIR.glob("*.yaml"))]
    raise SuiteError(suite, [("", f"no such suite file{registry.did_you_mean(suite, known)}")])


def shipped_suites() -> list[Path]:
    return sorted(SUITES_DIR.glob("*.yaml"))


def _read(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise SuiteError(str(path), [("", f"not valid YAML: {e}")]) from e
    if not isinstance(raw, dict):
        raise SuiteError(str(path), [("", "a suite is a YAML mapping (experiment, matrix, ...)")])
    return raw


def _name_errors(raw: dict[str, Any]) -> list[Error]:
    """Unknown presets, families and job kinds in the matrix, with did-you-mean."""
    from workloads.models import presets
    from workloads.models.config import FAMILIES

    matrix = raw.get("matrix")
    if not isinstance(matrix, dict):
        return []
    errors = []
    for key, known, what in (
        ("presets", presets.names(), "preset"),
        ("families", FAMILIES, "family"),
        ("jobs", tuple(registry.JOBS), "job kind"),
    ):
        values = matrix.get(key)
        for i, value in enumerate(values if isinstance(values, list) else []):
            if value not in known:
                errors.append(
                    (f"matrix.{key}[{i}]", f"unknown {what} {value!r}{registry.did_you_mean(value, known)}")
                )
            elif key == "jobs":
                try:
                    registry.get(value).load()
                except ValueError as e:
                    errors.append((f"matrix.{key}[{i}]", str(e)))
    return errors


def _merge(base: Any, over: Any) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for key, value in over.items():
            out[key] = _merge(base.get(key), value) if key in base else value
        return out
    return copy.deepcopy(over)


def _resources(spec: dict, variant: dict, kind: str) -> Resources:
    merged = _merge(
        (spec.get("resources") or {}).get(kind) or {}, (variant.get("resources") or {}).get(kind) or {}
    )
    memory = merged.pop("memory_gb", None)
    if memory is not None:
        merged["memory_bytes"] = int(memory * GIB)
    return Resources(**merged)


def _family_overrides(overrides: dict[str, Any], family: str) -> dict[str, Any]:
    """ModelOverrides that apply to `family`: moe_* only to MoE; l3_* to L3 and to MoE (whose model is
    matched to its group's L3 model); the rest to all."""
    return {
        k: v
        for k, v in overrides.items()
        if not (k.startswith(L3_ONLY) and family not in MODEL_FAMILIES)
        and not (k.startswith(MOE_ONLY) and family != "moe")
    }


@functools.cache
def _resolve_cached(spec, data_cfg):
    """(ModelConfig, ParamCount) of `spec` as a job on `data_cfg` runs it: the data is prepared (cached) and
    the L3 rows per token are weighted by its corpus. Estimated (budget / vocab rows, `ParamCount.estimated`,
    logged as match/estimated) when there is no corpus here: a model-free group (data_cfg None) or a
    remote corpus (kind in REMOTE_SOURCES), which only the job downloads and tokenizes on its cluster."""
    from workloads.jobs.setup import base_model_config, corpus_for, prepare_data, resolve_model_config
    from workloads.models.accounting import count_params

    corpus = None
    local = data_cfg is not None and data_cfg.source.kind not in REMOTE_SOURCES
    if local and spec.family in MODEL_FAMILIES:
        base = base_model_config(spec)
        # The window length changes neither the tokens nor the allocation (the job checks it itself).
        data_cfg = replace(data_cfg, seq_len=min(data_cfg.seq_len, base.max_seq_len))
        corpus = corpus_for(spec, prepare_data(data_cfg, base))
    cfg = resolve_model_config(spec, corpus)
    if cfg.l3 is None or corpus is None:
        return cfg, count_params(cfg)
    counts = {pos: corpus.allocate(cfg.l3.budget) for pos in cfg.l3.positions}
    return cfg, count_params(cfg, corpus.token_freqs, counts)


def _group_models(
    model_section: dict, preset: str, families: list[str], data_cfg, path: str, errors: list[Error]
):
    """{family: (ModelSpec, ModelConfig, ParamCount)} of one comparison group on `data_cfg` (dense and l3
    always resolved: they are the references of the match errors); None when a match is impossible."""
    from workloads.jobs.setup import ModelOverrides, ModelSpec

    overrides = model_section.get("overrides") or {}
    out = {}
    for family in dict.fromkeys(["dense", "l3", *families]):
        o = build(ModelOverrides, _family_overrides(overrides, family), f"{path}.overrides", errors)
        alloc = model_section.get("allocation_path") if family in MODEL_FAMILIES else None
        fields = {"preset": preset, "family": family, "overrides": o, "allocation_path": alloc}
        spec = build(ModelSpec, fields, path, errors) if o is not None else None
        if spec is None:
            return None
        try:
            cfg, count = _resolve_cached(spec, data_cfg)
        except (ValueError, OSError) as e:
            errors.append((path, f"preset {preset!r} as {family}: {e}"))
            return None
        out[family] = (spec, cfg, count)
    return out


def _match(models: dict, family: str) -> dict[str, float]:
    """The planned accounting of `family` in its group (L3_SPEC §5), logged as match/<key>."""
    count = models[family][2]
    dense, l3 = models["dense"][2], models["l3"][2]
    out = {
        "params_active": float(count.active),
        "params_active_max": float(count.active_max),
        "params_active_min": float(count.active_min),
        "params_total": float(count.total),
        "sparsity": count.total / count.active,
        "active_rel_err": count.active / dense.active - 1.0,
    }
    if any(models[f][2].estimated for f in models):  # a model-free group: no corpus to weight L3 rows by
        out["estimated"] = 1.0
    if family == "moe":
        out["total_rel_err"] = count.total / l3.total - 1.0
    return out


def _tolerance_errors(models: dict, families: list[str], group: str, tolerance: float, path: str) -> list:
    """One error per family of the group whose planned active or total error exceeds `tolerance`."""
    errors = []
    for family in families:
        planned = _match(models, family)
        for key, ref in (("active_rel_err", "dense"), ("total_rel_err", "l3")):
            err = planned.get(key)
            if err is None or abs(err) <= tolerance:
                continue
            what = "active" if key == "active_rel_err" else "total"
            mine, theirs = models[family][2], models[ref][2]
            n_mine, n_ref = (mine.active, theirs.active) if what == "active" else (mine.total, theirs.total)
            errors.append((path, (
                f"group {group}: {family} {what} {n_mine:,} vs {ref} {n_ref:,} is {err:+.2%} off, over the "
                f"match_tolerance {tolerance:.2%}"
            )))  # fmt: skip
    return errors


def _data_config(section: dict, path: str, errors: list[Error]):
    """The DataConfig of a job section (its corpus and tokenizer decide the L3 rows per token)."""
    from workloads.data import DataConfig

    return build(DataConfig, section.get("data") or {}, f"{path}.data", errors)


def _job(
    kind_name, section, model_entry, labels, seed, resources, max_retries, path, errors
) -> JobSpec | None:
    kind = registry.get(kind_name)
    cls, _ = kind.load()
    data = dict(section)
    if kind.uses_model:
        spec = model_entry[0]
        data.update({name: getattr(spec, name) for name in registry.MODEL_FIELDS})
    if kind.seed_field:
        data[kind.seed_field] = seed
    config = build(cls, data, path, errors)
    if config is None:
        return None
    resolved: dict[str, Any] = {"kind": kind_name, "job": to_plain(config)}
    if kind.uses_model:
        resolved["model_config"] = to_plain(model_entry[1])
    else:  # model-free (dummy): the labels keep jobs of different families apart
        resolved["labels"] = {"family": labels["family"], "preset": labels["preset"]}
    if not kind.seed_field:  # a job without a seed field still runs once per matrix seed
        resolved["seed"] = seed
    name = "/".join([kind_name, *(labels[k] for k in ("family", "preset", "variant")), f"s{seed}"])
    return JobSpec(
        name=name,
        kind=kind_name,
        config=config,
        resolved=resolved,
        fingerprint=fingerprint(resolved, code_version()),
        labels=labels,
        resources=resources,
        max_retries=max_retries,
    )


def _expand(spec: dict[str, Any], errors: list[Error]) -> list[JobSpec]:
    matrix = spec["matrix"]
    jobs: dict[str, JobSpec] = {}
    for v_index, variant in enumerate(matrix["variants"]):
        vpath = f"matrix.variants[{v_index}]"
        model_section = _merge(spec.get("model") or {}, variant.get("model") or {})
        for preset in matrix["presets"]:
            for kind in matrix["jobs"]:
                section, spath = spec.get(kind) or {}, kind
                if variant.get(kind):
                    section, spath = _merge(section, variant[kind]), f"{vpath}.{kind}"
                data_cfg = _data_config(section, spath, errors) if registry.get(kind).uses_model else None
                fams = matrix["families"]
                models = _group_models(model_section, preset, fams, data_cfg, f"{vpath}.model", errors)
                if models is None:
                    continue
                for seed in matrix["seeds"]:
                    group = f"{preset}/{variant['name']}/s{seed}"
                    tolerance = spec["match_tolerance"]
                    for err in _tolerance_errors(models, fams, group, tolerance, f"{vpath}.model"):
                        errors.append(err) if err not in errors else None
                    for family in fams:
                        labels = {"family": family, "preset": preset, "variant": variant["name"],
                                  "seed": str(seed), "group": group}  # fmt: skip
                        resources = _resources(spec, variant, kind)
                        args = (models[family], labels, seed, resources, spec["max_retries"])
                        job = _job(kind, spec.get(kind) or {}, *args, kind, errors)  # the suite's own section
                        if job is not None and variant.get(kind):
                            job = _job(kind, section, *args, spath, errors)
                        if job is not None and job.fingerprint not in jobs:
                            jobs[job.fingerprint] = replace(job, match=_match(models, family))
    return list(jobs.values())


def _prune(data: Any, loc: tuple[Any, ...]) -> bool:
    """Delete the value at `loc` so the rest of the suite can still be checked; False if not found."""
    node = data
    for part in loc[:-1]:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return False
    try:
        del node[loc[-1]]
    except (KeyError, IndexError, TypeError):
        return False
    return True


def _validate(raw: dict[str, Any], errors: list[Error]):
    """The validated suite, after pruning invalid values (their errors recorded) so that expansion can
    still find the errors elsewhere; None when what remains does not validate either."""
    model, data = suite_model(), copy.deepcopy(raw)
    for _ in range(4):
        try:
            return model.model_validate(data)
        except ValidationError as e:
            errors += [err for err in pydantic_errors(e, model) if err not in errors]
            locs = sorted((tuple(err["loc"]) for err in e.errors()), reverse=True)  # list items last-first
            if not all([_prune(data, loc) for loc in locs]):
                return None
    return None


def _known_names(matrix: dict[str, Any]) -> dict[str, Any]:
    """The matrix without the unknown presets / families / job kinds (reported by _name_errors)."""
    from workloads.models import presets
    from workloads.models.config import FAMILIES

    ok = {
        "presets": presets.names(),
        "families": FAMILIES,
        "jobs": [k for k, v in registry.JOBS.items() if v.available()],
    }
    return {**matrix, **{key: [v for v in matrix[key] if v in known] for key, known in ok.items()}}


def load_suite(suite: str | Path, sets: list[str] | None = None) -> Suite:
    """Validate and expand a suite file (or a shipped suite's name); raises SuiteError with every error."""
    path = resolve_path(str(suite))
    raw = _read(path)
    errors = apply_sets(raw, list(sets or []))
    errors += _name_errors(raw)
    validated = _validate(raw, errors)
    if validated is None:
        raise SuiteError(str(path), errors)
    spec = dump(validated)
    matrix = validated.matrix
    spec["matrix"] = _known_names({**matrix.model_dump(), "variants": [dump(v) for v in matrix.variants]})
    spec["max_retries"] = validated.max_retries
    spec["match_tolerance"] = validated.match_tolerance
    jobs = _expand(spec, errors)
    if errors:
        raise SuiteError(str(path), errors)
    if not jobs:
        raise SuiteError(str(path), [("matrix", "expands to no jobs")])
    experiment = validated.experiment or path.stem
    return Suite(path.stem, str(path), experiment, validated.description, tuple(jobs), raw)

"""Suite YAML → validated spec → expanded, fingerprinted `JobSpec`s (DESIGN.md "Data flow of one suite").
Details: docs/orchestrator.md#orchestratorsuitesexpansion."""

import itertools
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from orchestrator.suites import matching, registry
from orchestrator.suites.files import SuiteError, read, resolve_path
from orchestrator.suites.fingerprint import code_version, fingerprint
from orchestrator.suites.schema import (
    GIB,
    Error,
    Where,
    apply_sets,
    format_loc,
    merge,
    pruned,
    suite_model,
    validate,
)
from orchestrator.suites.spec import JobSpec, Resources, cluster_resources
from workloads import api as workloads


@dataclass(frozen=True)
class Suite:
    name: str
    path: str
    experiment: str
    description: str
    jobs: tuple[JobSpec, ...]
    on_oom: str  # what a job that runs out of memory does: "fail" or "halve_batch" (runs.outcomes)


@dataclass(frozen=True)
class Envelope:
    """The suite file past validation (`schema.suite_model`), as expansion reads it. The model, resources and
    job sections stay the mappings the file wrote: a variant's section is merged onto the suite's, each
    merged job section is then validated once into its kind's dataclass (`_section_config`), and an error
    names whether the suite or the variant wrote the value (`schema.Where`)."""

    matrix: dict[str, Any]  # families, presets, jobs (known names only), seeds; variants as written
    sections: dict[str, Any]  # "model", "resources" and each job kind's section, as written (or None)
    timing: dict[str, str]  # job kind → timing mode (`_timings`)
    max_retries: int
    match_tolerance: float
    cluster: Any  # a `clusters.spec.Cluster` whose resources the jobs get, or None
    folder: Path  # the suite file's folder: local task files are relative to it

    def section(self, key: str) -> dict[str, Any]:
        return self.sections.get(key) or {}


def _name_errors(raw: dict[str, Any]) -> list[Error]:
    """Unknown presets, families and job kinds in the matrix, with did-you-mean."""
    matrix = raw.get("matrix")
    if not isinstance(matrix, dict):
        return []
    errors = []
    for key, known, what in (
        ("presets", workloads.preset_names(), "preset"),
        ("families", workloads.FAMILIES, "family"),
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
    families = matrix.get("families") if isinstance(matrix.get("families"), list) else []
    variants = matrix.get("variants") if isinstance(matrix.get("variants"), list) else []
    for v, variant in enumerate(variants):
        own = variant.get("families") if isinstance(variant, dict) else None
        for i, value in enumerate(own if isinstance(own, list) else []):
            if value not in families:
                msg = f"{value!r} is not in matrix.families ({', '.join(map(str, families))})"
                errors.append((f"matrix.variants[{v}].families[{i}]", msg))
    return errors


def _variant_name_errors(variants: list) -> list[Error]:
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


def _timings(raw: Any, errors: list[Error]) -> dict[str, str]:
    """The suite's `timing:` per job kind over the kinds' defaults (`registry.JobKind.timing`): unknown
    kinds and `interleaved` for a kind that cannot interleave its jobs are errors at their paths."""
    out = {name: kind.timing for name, kind in registry.JOBS.items()}
    for name, mode in (raw if isinstance(raw, dict) else {}).items():
        if name not in registry.JOBS:
            errors.append((f"timing.{name}", f"unknown job kind{registry.did_you_mean(name, registry.JOBS)}"))
        elif mode == "interleaved" and not registry.get(name).interleave:
            able = [k for k, v in registry.JOBS.items() if v.interleave]
            errors.append(
                (
                    f"timing.{name}",
                    f"'interleaved' applies to job kinds {', '.join(able)}; "
                    f"{name} jobs are timed one per process (exclusive or shared)",
                )
            )
        else:
            out[name] = mode
    return out


def _resources(env: Envelope, variant: dict, kind: str) -> Resources:
    """The job's resources; on a cluster (`run --cluster`), the cluster's per device — before the job is
    resolved, since its device (and so the infer job's dtype) follows whether it gets GPUs."""
    merged = merge(env.section("resources").get(kind) or {}, (variant.get("resources") or {}).get(kind) or {})
    memory = merged.pop("memory_gb", None)
    if memory is not None:
        merged["memory_bytes"] = int(memory * GIB)
    if env.cluster is None:
        return Resources(**merged)
    return cluster_resources(env.cluster, Resources(**merged))


def _group_data(section: dict):
    """The DataConfig of a merged job section, for the group's corpus (L3 rows per token), when it is valid
    and readable; None otherwise (the job itself reports why, at the exact paths)."""
    from workloads import group  # torch: loaded when a suite is expanded, not by every reader

    data, problems = validate(group.DataConfig, section.get("data") or {})
    return None if problems or group.source_problems(data.source) else data


# The model fields and seed a job section is validated with, once for all the jobs it makes; each job's
# own (its family's matched `ModelSpec`, its matrix seed) replace them. A section may not set them itself.
STAND_IN = {"preset": "debug", "family": "dense"}


def _section_config(kind_name: str, section: dict, where: Where, errors: list[Error]):
    """(the kind's config of a merged job section, validated once for every job of it, or None; the
    section's DataConfig for its group's corpus, or None)."""
    kind = registry.get(kind_name)
    data_cfg = _group_data(section) if kind.uses_model else None
    if data_cfg is not None and section.get("data") is not None:
        section = {**section, "data": data_cfg}
    cls, _ = kind.load()
    fixed = {*(registry.MODEL_FIELDS if kind.uses_model else ()), "model", kind.seed_field} - {None}
    given = [key for key in section if key in fixed]
    for key in given:
        errors.append((where.path(key), "set by the suite's matrix and model section, not in a job section"))
    data = {k: v for k, v in section.items() if k not in given}
    data |= STAND_IN if kind.uses_model else {}
    data |= {kind.seed_field: 0} if kind.seed_field else {}
    config, problems = validate(cls, data)
    errors += [(where.path(loc), msg) for loc, msg in problems]
    return (None if given else config), data_cfg


def _job(
    kind_name: str, config, models, labels, seed, resources, where: Where, errors, timing, retries
) -> JobSpec | None:
    """One job: its section's validated config given its family's model and its seed, resolved once, its
    sources checked."""
    from workloads import group

    kind = registry.get(kind_name)
    own = {kind.seed_field: seed} if kind.seed_field else {}
    if kind.uses_model:
        spec = models[labels["family"]].spec
        own |= {name: getattr(spec, name) for name in registry.MODEL_FIELDS}
    config = replace(config, **own)  # no new validation: the spec and the seed are validated values
    try:
        model = models[labels["family"]].model if kind.uses_model else None
        config = kind.resolve(config, cuda=resources.num_gpus > 0, model=model)
    except group.FieldError as e:
        errors.append((where.path(e.field), e.message))
        return None
    except ValueError as e:
        errors.append((where.kind, str(e)))
        return None
    bad_sources = group.input_problems(config)
    errors += [(where.path(field), msg) for field, msg in bad_sources]
    match = matching.match(models, labels["family"])
    return None if bad_sources else _spec(kind, config, labels, seed, resources, timing, match, retries)


def _spec(kind: registry.JobKind, config, labels, seed, resources, timing: str, match, retries) -> JobSpec:
    """The JobSpec of a resolved config: what ships to the worker is what is fingerprinted (the timing
    mode too: numbers measured alone and beside other jobs are different results)."""
    resolved: dict[str, Any] = {"kind": kind.name, "job": workloads.to_jsonable(config), "timing": timing}
    if not kind.uses_model:  # model-free (dummy): the labels keep jobs of different families apart
        resolved["labels"] = {"family": labels["family"], "preset": labels["preset"]}
    if not kind.seed_field:  # a job without a seed field still runs once per matrix seed
        resolved["seed"] = seed
    if resources.num_workers > 1:  # the world size changes what runs (global batch, steps of a budget);
        resolved["num_workers"] = resources.num_workers  # cpus, gpus, memory, placement only where it runs
    name = "/".join([kind.name, *(labels[k] for k in ("family", "preset", "variant")), f"s{seed}"])
    return JobSpec(
        name=name,
        kind=kind.name,
        config=config,
        resolved=resolved,
        fingerprint=fingerprint(resolved, code_version()),
        labels=labels,
        resources=resources,
        timing=timing,
        match=match,
        max_retries=retries,
    )


def _suite_relative(task: Any, folder: Path) -> Any:
    if isinstance(task, dict) and isinstance(task.get("path"), str):
        path = Path(task["path"]).expanduser()
        return task | {"path": str(path if path.is_absolute() else folder / path)}
    return task


def _section(env: Envelope, variant: dict, kind: str, vpath: str, errors: list[Error]) -> dict:
    """The merged job section of `kind`. With an eval job in the matrix, the train job saves its final
    weights (unless it checkpoints: it does so at its last step too) and the eval job takes the train
    job's data (seq_len included): it evaluates the weights trained on that corpus, with its tokenizer, L3
    allocation and f-grams, so eval.data is never set. Task file paths are relative to the suite file."""
    section = merge(env.section(kind), variant.get(kind) or {})
    if kind == "train" and "eval" in env.matrix["jobs"] and not section.get("checkpoint_every"):
        return section | {"save_weights": True}  # with checkpoints, the last one (the final step) serves
    if kind != "eval":
        return section
    if "data" in section:
        mine = "data" in (variant.get("eval") or {})
        errors.append(
            (
                f"{vpath}.eval.data" if mine else "eval.data",
                "the eval job evaluates on the train job's data (tokenizer, L3 rows, f-grams): "
                "set it in the train section",
            )
        )
    tasks = section.get("tasks")
    if isinstance(tasks, list):  # a local task file's path is relative to the suite file's folder
        section["tasks"] = [_suite_relative(t, env.folder) for t in tasks]
    train = merge(env.section("train"), variant.get("train") or {})
    data = dict(train.get("data") or {})
    if train.get("seq_len") is not None:  # TrainJobConfig.data_config()
        data["seq_len"] = train["seq_len"]
    return {k: v for k, v in section.items() if k != "data"} | {"data": data}


def _linked(job: JobSpec, train: str | None, errors: list[Error]) -> JobSpec | None:
    """An eval job that runs after the train job `train` (its fingerprint) and reads its final weights:
    `after` names it, and it joins the fingerprint (other weights are another evaluation)."""
    if train is None:
        if job.config.checkpoint is None:
            errors.append(
                (
                    "matrix.jobs",
                    "an eval job evaluates its group's train job's final weights: add "
                    "'train' to matrix.jobs (or give eval.checkpoint)",
                )
            )
            return None
        return job
    resolved = job.resolved | {"after": train}
    return replace(job, after=train, resolved=resolved, fingerprint=fingerprint(resolved, code_version()))


def _expand(env: Envelope, errors: list[Error]) -> list[JobSpec]:
    matrix = env.matrix
    jobs: dict[str, JobSpec] = {}
    trained: dict[tuple, str] = {}  # (variant, preset, seed, family) → the train job's fingerprint
    kinds = sorted(matrix["jobs"], key=lambda kind: kind == "eval")  # train jobs before their evals
    for v_index, variant in enumerate(matrix["variants"]):
        vpath = f"matrix.variants[{v_index}]"
        model_section = merge(env.section("model"), variant.get("model") or {})
        model_path = f"{vpath}.model" if variant.get("model") else "model"
        overrides = model_section.get("overrides") or {}
        # a variant may run only some of the matrix's families (a control that means nothing for the others)
        fams = [f for f in matrix["families"] if f in (variant.get("families") or matrix["families"])]
        errors += matching.override_errors({**overrides, **model_section}, fams, model_path)
        per_kind = {}  # kind → (where, validated config, its DataConfig, resources): once per variant
        for kind in kinds:
            where = Where(kind, vpath, variant)
            section = _section(env, variant, kind, vpath, errors)
            resources = _resources(env, variant, kind)
            if env.timing[kind] == "interleaved" and resources.num_workers > 1:
                gang = f"resources.{kind}.num_workers={resources.num_workers} asks for a gang"
                errors.append((f"timing.{kind}", f"'interleaved' runs a group in one process; {gang}"))
            per_kind[kind] = (where, *_section_config(kind, section, where, errors), resources)
        for preset, kind in itertools.product(matrix["presets"], kinds):
            where, config, data_cfg, resources = per_kind[kind]
            models = matching.group_models(model_section, preset, fams, data_cfg, model_path, errors)
            if models is None:
                continue
            for seed, family in itertools.product(matrix["seeds"], fams):
                group = f"{preset}/{variant['name']}/s{seed}"
                for err in matching.tolerance_errors(models, fams, group, env.match_tolerance, model_path):
                    errors.append(err) if err not in errors else None
                if config is None:
                    continue
                labels = {"family": family, "preset": preset, "variant": variant["name"], "seed": str(seed)}
                labels["group"] = group
                timing, retries = env.timing[kind], env.max_retries
                job = _job(kind, config, models, labels, seed, resources, where, errors, timing, retries)
                key = (variant["name"], preset, seed, family)
                if job is not None and kind == "eval":
                    job = _linked(job, trained.get(key), errors)
                if job is None:
                    continue
                if kind == "train":
                    trained[key] = job.fingerprint
                jobs.setdefault(job.fingerprint, job)
    return list(jobs.values())


def _known_names(matrix: dict[str, Any]) -> dict[str, Any]:
    """The matrix without the unknown presets / families / job kinds (reported by _name_errors); with none
    left, a stand-in preset / family, so that the job sections are still checked."""
    ok = {
        "presets": workloads.preset_names(),
        "families": workloads.FAMILIES,
        "jobs": [k for k, v in registry.JOBS.items() if v.available()],
    }
    out = {**matrix, **{key: [v for v in matrix[key] if v in known] for key, known in ok.items()}}
    return out | {k: v for k, v in (("presets", ["debug"]), ("families", ["dense"])) if not out[k]}


def load_suite(suite: str | Path, sets: list[str] | None = None, cluster=None) -> Suite:
    """Validate and expand a suite file (or a shipped suite's name); raises SuiteError with every error.
    cluster: a `clusters.spec.Cluster` whose resources the jobs get (`spec.cluster_resources`)."""
    path = resolve_path(str(suite))
    raw = read(path)
    errors = apply_sets(raw, list(sets or []))
    errors += _name_errors(raw)
    validated, problems = validate(suite_model(), raw)
    errors += [(format_loc(loc), msg) for loc, msg in problems]
    if validated is None:
        raw = pruned(raw, [loc for loc, _ in problems])
        validated, _ = validate(suite_model(), raw)
        if validated is None:
            raise SuiteError(str(path), errors)
    matrix = validated.matrix.model_dump()
    matrix["variants"] = raw.get("matrix", {}).get("variants") or [{"name": "base"}]
    errors += _variant_name_errors(matrix["variants"])
    env = Envelope(
        matrix=_known_names(matrix),
        sections={key: raw.get(key) for key in ("model", "resources", *registry.JOBS)},
        timing=_timings(raw.get("timing"), errors),
        max_retries=validated.max_retries,
        match_tolerance=validated.match_tolerance,
        cluster=cluster,
        folder=path.resolve().parent,
    )
    jobs = _expand(env, errors)
    if errors:
        raise SuiteError(str(path), errors)
    if not jobs:
        raise SuiteError(str(path), [("matrix", "expands to no jobs")])
    experiment = validated.experiment or path.stem
    return Suite(path.stem, str(path), experiment, validated.description, tuple(jobs), validated.on_oom)

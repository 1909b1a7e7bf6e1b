"""A comparison group, prepared once (`prepare_group`): each family's model matched iso-sparse (L3_SPEC §5)
on the group's corpus through the job's own chain (`setup.prepare_job`: data → corpus → matched model → L3
counts → f-grams), with its planned parameter count, so a suite plans exactly the models its jobs run;
and a job's inputs checked by preparing them as the job will (`input_problems`)."""

import functools
from dataclasses import dataclass, replace

from workloads.data import DataConfig
from workloads.data.pipeline import prepare_corpus
from workloads.jobs.setup import (
    FieldError,
    base_model_config,
    corpus_params,
    prepare_job,
    resolve_model_config,
)
from workloads.jobs.spec import OVERRIDE_FAMILIES, ModelOverrides, ModelSpec, applies
from workloads.models.accounting import ParamCount, count_params
from workloads.models.config import EXPERT_FAMILIES, ModelConfig

# The families whose models depend on the corpus: L3 rows per token are weighted by it, and the MoE models
# are matched iso-total with the group's L3 model. A group of none of them prepares no data.
CORPUS_FAMILIES = ("l3", *EXPERT_FAMILIES)
REMOTE_SOURCES = ("hf",)  # corpora only the job downloads and tokenizes (network, size): never read here


@dataclass(frozen=True)
class Member:
    """One family of a group: the `ModelSpec` its jobs carry, the model they run and its parameter count
    (`ParamCount.estimated` when there was no corpus to weight the L3 rows by)."""

    spec: ModelSpec
    model: ModelConfig
    params: ParamCount


def member_spec(preset: str, family: str, overrides: dict, allocation_path: str | None = None) -> ModelSpec:
    """`family`'s spec in a group whose model section is (overrides, allocation_path): only what applies to
    the family (`spec.applies`); l3_* and the allocation file also describe the L3 model a MoE matches."""
    kept = ModelOverrides(**{k: v for k, v in overrides.items() if applies(k, family)})
    return ModelSpec(preset, family, kept, allocation_path if applies("allocation_path", family) else None)


def unused_overrides(section: dict, families) -> list[tuple[str, tuple[str, ...]]]:
    """(name, the families it applies to) of each override or allocation file in `section` that no family of
    `families` uses: it would silently do nothing."""
    used = (n for n in OVERRIDE_FAMILIES if n in section)
    return [(n, OVERRIDE_FAMILIES[n]) for n in used if not any(applies(n, f) for f in families)]


def prepare_group(
    preset: str,
    families,
    overrides: dict,
    allocation_path: str | None,
    data: DataConfig | None,
    cache_dir=None,
) -> dict[str, Member]:
    """{family: Member} of dense, l3 (the references of the match errors) and `families`, in that order.

    data: the group's corpus (None: none readable). Without a corpus family in `families`, or for a remote
    corpus, the models are matched on the L3 budget / vocab estimate. Raises FieldError for a bad model
    field ("overrides.<name>"); a bad data field only drops the corpus (the job reports it at its own path);
    ValueError naming the preset and family when a model cannot be matched."""
    if not set(CORPUS_FAMILIES) & set(families):
        data = None
    out = {}
    for family in dict.fromkeys(["dense", "l3", *families]):
        spec = member_spec(preset, family, overrides, allocation_path)
        try:
            out[family] = _member(spec, data, cache_dir)
        except FieldError as e:
            if e.field.startswith("overrides."):
                raise
            out[family] = _member(spec, None, cache_dir)
        except (ValueError, OSError) as e:
            raise ValueError(f"preset {preset!r} as {family}: {e}") from e
    return out


@functools.cache
def _member(spec: ModelSpec, data: DataConfig | None, cache_dir) -> Member:
    if data is None or data.source.kind in REMOTE_SOURCES or spec.family not in CORPUS_FAMILIES:
        model = resolve_model_config(spec)
        return Member(spec, model, count_params(model))
    # The window length changes neither the tokens nor the allocation (the job checks it itself).
    data = replace(data, seq_len=min(data.seq_len, base_model_config(spec).max_seq_len))
    job = prepare_job(spec, None, data, cache_dir)
    return Member(spec, job.model, corpus_params(job.model, job.data, job.counts))


def input_problems(cfg) -> list[tuple[str, str]]:
    """(field path in the job config `cfg`, message): each data source (its `data`, its `eval_data`) that
    cannot be read; else each local corpus whose split leaves the train or validation split empty, and for a
    SCONE model too few f-gram candidates (its job's own `prepare_job`, into the cache the job reads)."""
    sources = [("data", getattr(cfg, "data", None))]
    sources += [(f"eval_data.{name}", d) for name, d in (getattr(cfg, "eval_data", None) or {}).items()]
    sources = [(where, d) for where, d in sources if d is not None]
    bad = [(f"{where}.source.{f}", m) for where, d in sources for f, m in source_problems(d.source)]
    if bad:
        return bad
    local = [(where, d) for where, d in sources if d.source.kind not in REMOTE_SOURCES]
    problems = [(where, msg) for where, d in local if (msg := _problem(d)) is not None]
    model = getattr(cfg, "model", None)
    scone = getattr(model, "scone", None) is not None and hasattr(cfg, "data_config")
    if not problems and scone and local and local[0][0] == "data":
        msg = _problem(cfg.data_config(), cfg.model_spec(), model)
        problems += [("model.scone.n_fgrams", msg)] if msg else []
    return problems


@functools.cache
def source_problems(source) -> tuple[tuple[str, str], ...]:
    """(field, message) for each reason a data source cannot be read (`source.check()`, once per source)."""
    return tuple(source.check())


@functools.cache
def _problem(data: DataConfig, spec: ModelSpec | None = None, model: ModelConfig | None = None) -> str | None:
    try:
        prepare_corpus(data) if spec is None else prepare_job(spec, model, data)
    except (ValueError, OSError) as err:
        return str(err)
    return None

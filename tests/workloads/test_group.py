"""workloads.group: a comparison group's models are the ones its jobs' own chain (`prepare_job`) builds, the
family x override rule applied once, and when no corpus is read (estimated counts) or an error is raised."""

from dataclasses import replace

import pytest

from workloads.data import DataConfig
from workloads.data.sources import HFSource, TextSource
from workloads.group import FieldError, member_spec, prepare_group, unused_overrides
from workloads.jobs.setup import prepare_job, token_freqs_for
from workloads.jobs.spec import ModelOverrides, ModelSpec
from workloads.models.accounting import count_params
from workloads.models.config import EXPERT_FAMILIES

DATA = DataConfig(max_documents=50, val_fraction=0.2, seq_len=64)
OVERRIDES = {"vocab_size": 512, "l3_cap": 16, "moe_top_k": 1, "scone_n_fgrams": 64}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("group-cache")  # its own: the jobs tests count the L3 files in theirs


def test_each_member_is_what_its_job_prepares_on_the_group_corpus(cache_dir):
    group = prepare_group("debug", ["dense", "l3", "moe"], OVERRIDES, None, DATA, cache_dir)
    assert list(group) == ["dense", "l3", "moe"]
    for family, member in group.items():
        assert member.spec == member_spec("debug", family, OVERRIDES)
        job = prepare_job(member.spec, None, DATA, cache_dir)
        assert member.model == job.model
        freqs = token_freqs_for(job.model, job.data)
        assert member.params == count_params(job.model, freqs, job.counts or None)
        assert not member.params.estimated
    l3 = group["l3"].params  # weighted by the corpus, not budget / vocab
    assert l3.active != count_params(group["l3"].model).active
    assert group["moe"].model.moe.top_k == 1


def test_dense_and_l3_are_always_members_and_a_window_too_long_is_left_to_the_job(cache_dir):
    long = replace(DATA, seq_len=10_000)  # over debug's max_seq_len: the job reports it at data.seq_len
    group = prepare_group("debug", ["moe"], OVERRIDES, None, long, cache_dir)
    assert list(group) == ["dense", "l3", "moe"]
    assert group["l3"].model == prepare_group("debug", ["l3"], OVERRIDES, None, DATA, cache_dir)["l3"].model


def test_the_family_override_rule():
    given = {**OVERRIDES, "l3_tied": True, "moe_capacity_factor": 2.0}
    o = {f: member_spec("debug", f, given, "rows.npz") for f in ("dense", "l3", "moe", "hash_moe", "scone")}
    assert o["dense"] == ModelSpec("debug", "dense", ModelOverrides(vocab_size=512))
    assert o["scone"] == ModelSpec("debug", "scone", ModelOverrides(vocab_size=512, scone_n_fgrams=64))
    l3 = {"vocab_size": 512, "l3_cap": 16, "l3_tied": True}
    assert o["l3"] == ModelSpec("debug", "l3", ModelOverrides(**l3), "rows.npz")
    moe = ModelOverrides(**l3, moe_top_k=1, moe_capacity_factor=2.0)
    assert o["moe"] == ModelSpec("debug", "moe", moe, "rows.npz")
    assert o["hash_moe"] == ModelSpec("debug", "hash_moe", ModelOverrides(**l3, moe_top_k=1), "rows.npz")


def test_unused_overrides_name_the_families_they_apply_to():
    section = {**OVERRIDES, "moe_capacity_factor": 2.0, "allocation_path": "rows.npz"}
    assert unused_overrides(section, ["dense", "l3", "moe", "scone"]) == []
    assert unused_overrides(section, ["dense", "l3"]) == [
        ("moe_top_k", EXPERT_FAMILIES),
        ("moe_capacity_factor", ("moe",)),
        ("scone_n_fgrams", ("scone",)),
    ]
    assert [name for name, _ in unused_overrides(section, ["dense"])] == [
        "l3_cap",
        "allocation_path",
        "moe_top_k",
        "moe_capacity_factor",
        "scone_n_fgrams",
    ]  # OVERRIDE_FAMILIES' order
    assert unused_overrides({"vocab_size": 512}, ["dense"]) == []  # applies to every family


def test_a_group_without_a_corpus_family_reads_no_data(tmp_path):
    (tmp_path / "one.txt").write_text("a single short document")  # its split has no validation part
    data = DataConfig(source=TextSource(paths=(str(tmp_path / "one.txt"),)), max_documents=1, seq_len=16)
    group = prepare_group("debug", ["dense", "scone"], OVERRIDES, None, data)
    assert group["l3"].params.estimated and not group["dense"].params.estimated
    assert group["l3"].params == count_params(group["l3"].model)
    with pytest.raises(ValueError, match=r"^preset 'debug' as l3: .*"):
        prepare_group("debug", ["dense", "l3"], OVERRIDES, None, data)


def test_a_remote_corpus_is_estimated_and_never_read():
    data = DataConfig(source=HFSource(name="no/such-dataset"), seq_len=64)
    group = prepare_group("debug", ["dense", "l3", "moe"], OVERRIDES, None, data)
    assert group["l3"].params.estimated


def test_a_bad_model_field_raises_at_its_override_and_a_bad_data_field_drops_the_corpus(tmp_path):
    with pytest.raises(FieldError) as err:
        prepare_group("debug", ["l3"], {**OVERRIDES, "l3_positions": [0, 99]}, None, DATA)
    assert err.value.field == "overrides.l3_positions"
    missing = replace(DATA, tokenizer_path=str(tmp_path / "none.json"))
    group = prepare_group("debug", ["dense", "l3"], OVERRIDES, None, missing)
    assert group["l3"].params.estimated

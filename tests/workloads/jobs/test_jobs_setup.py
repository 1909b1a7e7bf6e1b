"""workloads.jobs.setup: preset resolution with overrides, data checks, L3 counts (cached / file), build."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from workloads.data import DataConfig
from workloads.jobs import setup as job_setup
from workloads.jobs.setup import (
    FieldError,
    build_model,
    device_and_dtype,
    prepare_data,
    prepare_job,
    resolve_model_config,
    token_freqs_for,
)
from workloads.jobs.spec import ModelOverrides, ModelSpec
from workloads.l3.allocation import save_allocation, uniform_allocate
from workloads.models import presets
from workloads.models.accounting import count_params

VOCAB = 512
DATA = DataConfig(max_documents=50, val_fraction=0.2, seq_len=64)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    # One folder for every jobs test file: the tokenizer is trained once per session.
    path = tmp_path_factory.getbasetemp() / "jobs-cache"
    path.mkdir(exist_ok=True)
    return path


def spec(family="l3", **overrides) -> ModelSpec:
    return ModelSpec("debug", family, ModelOverrides(vocab_size=VOCAB, **overrides))


def test_no_overrides_is_the_preset():
    for family in ("dense", "l3", "moe"):
        assert resolve_model_config(ModelSpec("tiny", family)) == presets.get("tiny", family)


def test_overrides_are_matched_again():
    dense, l3, moe = (resolve_model_config(spec(f)) for f in ("dense", "l3", "moe"))
    assert dense.vocab_size == l3.vocab_size == moe.vocab_size == VOCAB
    assert l3.l3.budget == 4 * VOCAB  # the preset's rows per token kept
    active = count_params(dense).active
    assert abs(count_params(l3).active - active) <= 0.02 * active
    assert abs(count_params(moe).active - active) <= 0.02 * active
    assert abs(count_params(moe).total - count_params(l3).total) <= 0.02 * count_params(l3).total
    tied = resolve_model_config(spec(l3_tied=True, l3_cap=8, l3_residual=True, l3_allocation="uniform"))
    assert (tied.l3.tied, tied.l3.d_emb, tied.l3.cap, tied.l3.residual) == (True, tied.dim, 8, True)
    ep = resolve_model_config(spec("moe", moe_top_k=2, moe_ep_size=2, moe_use_rts=False))
    assert (ep.moe.top_k, ep.moe.ep_size, ep.moe.use_rts, ep.moe.num_experts % 2) == (2, 2, False, 0)


def test_moe_knobs_reach_the_config_and_the_matcher_keeps_iso_sparse():
    l3 = resolve_model_config(spec("l3"))
    active, total = count_params(resolve_model_config(spec("dense"))).active, count_params(l3).total
    knobs = dict(moe_capacity_factor=1.25, moe_eval_capacity_factor=2.0, moe_min_capacity=0,
                 moe_drop_tokens=False, moe_aux_loss_coef=0.001)  # fmt: skip
    moe = resolve_model_config(spec("moe", **knobs))
    got = (moe.moe.capacity_factor, moe.moe.eval_capacity_factor, moe.moe.min_capacity,
           moe.moe.drop_tokens, moe.moe.aux_loss_coef)  # fmt: skip
    assert got == (1.25, 2.0, 0, False, 0.001)
    for n_exp in (4, 16):  # a fixed expert count: the matcher picks top_k and the width
        fixed = resolve_model_config(spec("moe", moe_num_experts=n_exp))
        assert fixed.moe.num_experts == n_exp
        pc = count_params(fixed)
        assert abs(pc.active / active - 1) <= 0.02 and abs(pc.total / total - 1) <= 0.02, n_exp
    with pytest.raises(ValueError, match="num_experts=2"):  # top_k 2 needs more than 2 experts
        resolve_model_config(spec("moe", moe_num_experts=2, moe_top_k=2))


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: ModelSpec("tiny", "dense", ModelOverrides(moe_num_experts=4)), "overrides.moe_num_experts"),
        (lambda: ModelOverrides(moe_capacity_factor=0.0), "ModelOverrides.moe_capacity_factor must be > 0"),
        (lambda: ModelOverrides(moe_num_experts=1), "ModelOverrides.moe_num_experts must be >= 2, got 1"),
        (lambda: ModelOverrides(moe_min_capacity=-1), "ModelOverrides.moe_min_capacity must be >= 0"),
        (lambda: ModelOverrides(moe_aux_loss_coef=-0.1), "ModelOverrides.moe_aux_loss_coef must be >= 0"),
        (lambda: ModelSpec("tinyy", "dense"), "did you mean 'tiny'"),
        (lambda: ModelSpec("tiny", "sparse"), "family"),
        (lambda: ModelSpec("tiny", "dense", ModelOverrides(l3_cap=4)), "overrides.l3_cap"),
        (lambda: ModelSpec("tiny", "l3", ModelOverrides(moe_top_k=2)), "overrides.moe_top_k"),
        (lambda: ModelSpec("tiny", "dense", allocation_path="x.npz"), "allocation_path"),
        (lambda: ModelOverrides(vocab_size=0), "ModelOverrides.vocab_size must be >= 1, got 0"),
        (lambda: ModelOverrides(l3_impl="fast"), "ModelOverrides.l3_impl must be one of"),
    ],
)
def test_bad_specs_name_the_field(make, field):
    with pytest.raises(ValueError, match=field):
        make()


def test_data_checks(cache_dir):
    model = resolve_model_config(spec("dense"))
    with pytest.raises(FieldError, match="data.seq_len: 512 exceeds the model's max_seq_len=256"):
        prepare_data(replace(DATA, seq_len=512), model, cache_dir)
    tiny_vocab = resolve_model_config(ModelSpec("debug", "dense", ModelOverrides(vocab_size=256)))
    with pytest.raises(FieldError, match="below the byte-level BPE minimum 257") as info:
        prepare_data(DATA, tiny_vocab, cache_dir)  # 256 < 256 bytes + <|endoftext|>
    assert info.value.field == "overrides.vocab_size"
    data = prepare_data(DATA, model, cache_dir)
    assert data.vocab_size <= VOCAB and data.config.vocab_size == VOCAB
    small = resolve_model_config(ModelSpec("debug", "dense", ModelOverrides(vocab_size=300)))
    with pytest.raises(FieldError, match="data.tokenizer_path: .* has vocab_size=512 > the model's 300"):
        prepare_data(replace(DATA, tokenizer_path=str(data.tokenizer_path)), small, cache_dir)
    freqs = token_freqs_for(resolve_model_config(ModelSpec("debug", "dense", ModelOverrides(1024))), data)
    assert freqs.shape == (1024,) and freqs[data.vocab_size :].sum() == 0
    assert freqs.sum() == data.train.n_tokens


def l3_counts(s: ModelSpec, model, data_cfg, cache_dir):
    return prepare_job(s, model, data_cfg, cache_dir).counts  # the job's chain, the model as shipped


def test_l3_counts_lzw_cached_uniform_and_file(cache_dir, tmp_path, monkeypatch):
    s = spec()
    model = resolve_model_config(s)
    before = set((cache_dir / "l3").glob("alloc-*.npz"))  # the folder is shared with other test files
    counts = l3_counts(s, model, DATA, cache_dir)
    assert sorted(counts) == list(model.l3.positions)
    c = counts[model.l3.positions[0]]
    assert c.shape == (VOCAB,) and c.sum() == model.l3.budget and c.max() <= model.l3.cap
    assert c.max() > c.min()  # LZW gives frequent tokens more rows
    assert len(set((cache_dir / "l3").glob("alloc-*.npz")) - before) <= 1  # one file, unless one was there
    with monkeypatch.context() as m:  # the second call reads the file: no allocation runs
        m.setattr(job_setup, "lzw_allocate", lambda *a: pytest.fail("the allocation was recomputed"))
        again = l3_counts(s, model, DATA, cache_dir)
    assert np.array_equal(again[model.l3.positions[0]], c)
    uni_spec = spec(l3_allocation="uniform")
    uni = l3_counts(uni_spec, resolve_model_config(uni_spec), DATA, cache_dir)
    assert np.array_equal(uni[model.l3.positions[0]], uniform_allocate(VOCAB, model.l3.budget, model.l3.cap))

    good = tmp_path / "good.npz"
    save_allocation(
        good, c, vocab_size=VOCAB, budget=model.l3.budget, cap=512, corpus_fingerprint="x", n_tokens=1
    )
    from_file = l3_counts(replace(s, allocation_path=str(good)), model, DATA, cache_dir)
    assert np.array_equal(from_file[model.l3.positions[-1]], c)
    bad = tmp_path / "bad.npz"
    save_allocation(bad, uniform_allocate(600, 2400), vocab_size=600, budget=2400, cap=512,
                    corpus_fingerprint="x", n_tokens=1)  # fmt: skip
    with pytest.raises(ValueError, match="allocation_path .* has vocab_size=600, but the tokenizer has 512"):
        l3_counts(replace(s, allocation_path=str(bad)), model, DATA, cache_dir)
    meta = json.loads(str(np.load(good)["metadata"]))
    assert meta["vocab_size"] == VOCAB


def test_build_model_is_seeded_and_counts_params():
    s = spec()
    model_cfg = resolve_model_config(s)
    counts = {p: uniform_allocate(VOCAB, model_cfg.l3.budget) for p in model_cfg.l3.positions}
    a, b = (build_model(model_cfg, counts, "cpu", seed=3) for _ in range(2))
    assert all(
        torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )
    assert sum(p.numel() for p in a.parameters()) == count_params(model_cfg).total
    dense = build_model(resolve_model_config(spec("dense")), None, "cpu")
    assert sum(p.numel() for p in dense.parameters()) == count_params(dense.config).total


def test_allocation_file_covers_the_model_vocab_when_the_bpe_stops_short(cache_dir, tmp_path):
    # 6 documents cannot fill a 2048-token BPE: the tokenizer has fewer ids than the model's vocabulary.
    s = ModelSpec("debug", "l3", ModelOverrides(vocab_size=2048, l3_allocation="uniform"))
    model = resolve_model_config(s)
    small = DataConfig(max_documents=6, val_fraction=0.4, seq_len=32)
    data = prepare_data(small, model, cache_dir)
    assert data.vocab_size < model.vocab_size
    l3 = model.l3
    path = tmp_path / "model-vocab.npz"
    counts = uniform_allocate(model.vocab_size, l3.budget, l3.cap)
    save_allocation(path, counts, vocab_size=model.vocab_size, budget=l3.budget, cap=l3.cap,
                    corpus_fingerprint=data.fingerprint, n_tokens=data.train.n_tokens)  # fmt: skip
    got = l3_counts(replace(s, allocation_path=str(path)), model, small, cache_dir)
    assert all(np.array_equal(c, counts) for c in got.values()) and sorted(got) == list(l3.positions)
    short = tmp_path / "tokenizer-vocab.npz"  # indexed by the tokenizer's ids only: the model's ids overflow
    save_allocation(short, uniform_allocate(data.vocab_size, l3.budget, l3.cap), vocab_size=data.vocab_size,
                    budget=l3.budget, cap=l3.cap, corpus_fingerprint="x", n_tokens=1)  # fmt: skip
    with pytest.raises(ValueError, match=f"allocation_path .* has vocab_size={data.vocab_size}, but the"):
        l3_counts(replace(s, allocation_path=str(short)), model, small, cache_dir)


def test_l3_positions_place_the_l3_layers_and_keep_the_match():
    """l3_positions moves the L3 layers (the paper's middle by default); the model stays iso-active and its
    MoE / hash-MoE peers are matched to the moved L3 model."""
    early = ModelOverrides(l3_positions=[0, 1])  # a YAML list becomes the frozen tuple
    assert early.l3_positions == (0, 1) and hash(ModelSpec("tiny", "l3", early))
    dense = count_params(presets.get("tiny"))
    l3 = resolve_model_config(ModelSpec("tiny", "l3", early))
    assert l3.l3.positions == (0, 1) != presets.get("tiny", "l3").l3.positions
    assert [b.index for b in l3.block_specs() if b.l3_after] == [0, 1]
    assert abs(count_params(l3).active / dense.active - 1) <= 0.02
    for family in ("moe", "hash_moe"):
        peer = count_params(resolve_model_config(ModelSpec("tiny", family, early)))
        assert abs(peer.total / count_params(l3).total - 1) <= 0.02
    with pytest.raises(ValueError, match="applies to family 'l3'"):
        ModelSpec("tiny", "dense", early)


def test_scone_overrides_set_its_scaling_axes():
    """scone_* overrides reach SconeConfig; inference-resident params stay matched (A_fgram trains only)."""
    base = resolve_model_config(ModelSpec("tiny", "scone"))
    o = ModelOverrides(scone_n_fgrams=4096, scone_max_n=3, scone_min_count=2, scone_fgram_ffn_dim=256,
                       scone_depth_multiplier=0.5)  # fmt: skip
    cfg = resolve_model_config(ModelSpec("tiny", "scone", o))
    sc = cfg.scone
    assert (sc.n_fgrams, sc.max_n, sc.min_count, sc.fgram_ffn_dim) == (4096, 3, 2, 256)
    assert sc.fgram_layers is None and sc.layers(cfg.n_layers) == round(0.5 * cfg.n_layers)  # the multiplier
    assert count_params(cfg).active == count_params(base).active
    assert count_params(cfg).by_category["fgram_model"] < count_params(base).by_category["fgram_model"]
    deep = resolve_model_config(ModelSpec("tiny", "scone", ModelOverrides(scone_fgram_layers=3)))
    assert deep.scone.layers(deep.n_layers) == 3
    with pytest.raises(ValueError, match="overrides.scone_n_fgrams applies to family 'scone', not 'l3'"):
        ModelSpec("tiny", "l3", ModelOverrides(scone_n_fgrams=10))


@pytest.mark.parametrize(
    ("device", "dtype", "cuda", "expected"),
    [
        ("auto", "auto", True, ("cuda", "bfloat16")),
        ("auto", "auto", False, ("cpu", "float32")),
        ("cuda:1", "auto", False, ("cuda:1", "bfloat16")),  # an explicit device wins over `cuda`
        ("cpu", "auto", True, ("cpu", "float32")),
        ("cpu", "float16", True, ("cpu", "float16")),  # an explicit dtype is kept
    ],
)
def test_auto_device_and_dtype_of_the_infer_and_eval_jobs(device, dtype, cuda, expected):
    assert device_and_dtype(device, dtype, cuda) == expected

"""Config validation: every user error names the field and the value."""

import re
import typing
from dataclasses import replace

import pytest

from workloads.kernels.l3_lookup.op import LookupImpl
from workloads.models.config import BlockSpec, L3Config, L3Impl, ModelConfig, MoEConfig, middle_positions

BASE = dict(vocab_size=512, dim=64, n_layers=4, n_heads=4, n_kv_heads=2, ffn_dim=176)


def l3(**kw):
    return L3Config(**{"positions": (1, 2), "budget": 1024, "d_emb": 32, "d_up": 128, **kw})


def moe(**kw):
    return MoEConfig(**{"positions": (0, 3), "num_experts": 4, "ffn_dim": 64, **kw})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"dim": 60, "n_heads": 8}, "model.dim=60 is not divisible by model.n_heads=8"),
        ({"n_kv_heads": 3}, "model.n_heads=4 is not divisible by model.n_kv_heads=3"),
        ({"dim": 12, "n_heads": 4}, "head_dim = dim / n_heads = 3 must be even"),
        ({"n_layers": 0}, "ModelConfig.n_layers must be >= 1, got 0"),
        ({"dtype": "float64"}, "ModelConfig.dtype must be one of 'float32', 'bfloat16', 'float16', got"),
        (
            {"family": "ngram"},
            "ModelConfig.family must be one of 'dense', 'l3', 'moe', 'scone', 'hash_moe', got 'ngram'",
        ),
        ({"family": "l3"}, "model.family='l3' needs an l3 config"),
        ({"l3": l3()}, "model.family='dense' must not have an l3 config"),
        ({"family": "moe", "moe": moe(positions=(0, 4))}, "moe.positions=(0, 4) must lie in [0, 4)"),
        ({"family": "l3", "l3": l3(positions=(5,))}, "l3.positions=(5,) must lie in [0, 4)"),
        ({"family": "l3", "l3": l3(tied=True)}, "l3.tied=True needs l3.d_emb == model.dim"),
        ({"family": "l3", "l3": l3(budget=100)}, "l3.budget=100 must lie in [vocab_size, vocab_size * cap]"),
        ({"family": "l3", "l3": l3(budget=512 * 4 + 1, cap=4)}, "l3.budget=2049 must lie in"),
    ],
)
def test_model_config_rejects(overrides, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        ModelConfig(**{**BASE, **overrides})


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: l3(positions=(2, 1)), "L3Config.positions must be strictly increasing, got (2, 1)"),
        (lambda: l3(positions=()), "L3Config.positions must hold at least 1 item(s), got ()"),
        (lambda: l3(positions=(-1, 2)), "L3Config.positions must be >= 0, got (-1, 2)"),
        (lambda: l3(cap=0), "L3Config.cap must be >= 1, got 0"),
        (
            lambda: l3(allocation="zipf"),
            "L3Config.allocation must be one of 'lzw', 'lzw-paper', 'uniform', got 'zipf'",
        ),
        (lambda: moe(top_k=5), "moe.top_k=5 exceeds moe.num_experts=4"),
        (lambda: moe(ep_size=3), "moe.num_experts=4 is not divisible by moe.ep_size=3"),
        (lambda: moe(min_capacity=-1), "MoEConfig.min_capacity must be >= 0"),
        (lambda: moe(capacity_factor=0.0), "MoEConfig.capacity_factor must be > 0"),
        (lambda: moe(capacity_factor=float("nan")), "MoEConfig.capacity_factor must be > 0, got nan"),
    ],
)
def test_sub_configs_reject(make, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        make()


def test_block_specs_follow_positions():
    cfg = ModelConfig(**BASE, family="moe", moe=moe(positions=(1, 3)))
    assert [s.mlp for s in cfg.block_specs()] == ["dense", "moe", "dense", "moe"]
    cfg = ModelConfig(**BASE, family="l3", l3=l3(positions=(2,)))
    assert cfg.block_specs()[2] == BlockSpec(index=2, mlp="dense", l3_after=True)
    assert sum(s.l3_after for s in cfg.block_specs()) == 1


def test_configs_are_frozen():
    cfg = ModelConfig(**BASE)
    with pytest.raises(AttributeError):
        cfg.dim = 128  # type: ignore[misc]
    assert replace(cfg, dim=128, n_heads=8).dim == 128


def test_middle_positions():
    assert middle_positions(20, 2) == (6, 12)
    assert middle_positions(4, 2) == (0, 2)
    assert middle_positions(3, 1) == (1,)
    with pytest.raises(ValueError, match="cannot place 3 sublayers in 2 blocks"):
        middle_positions(2, 3)


def test_l3_impl_choices_match_the_kernel_op():
    assert typing.get_args(L3Impl) == typing.get_args(LookupImpl)

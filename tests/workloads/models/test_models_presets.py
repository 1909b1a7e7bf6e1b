"""Named presets: exact lookup with helpful errors; the paper sizes land on the paper's counts."""

import pytest

from workloads.models import presets
from workloads.models.accounting import count_params
from workloads.models.config import FAMILIES


@pytest.mark.parametrize("name", presets.names())
def test_every_preset_and_family_resolves(name):
    configs = {family: presets.get(name, family) for family in FAMILIES}
    assert {cfg.family for cfg in configs.values()} == set(FAMILIES)
    dense = count_params(configs["dense"])
    l3, moe = count_params(configs["l3"]), count_params(configs["moe"])
    assert abs(l3.active / dense.active - 1) <= 0.02 and abs(moe.active / dense.active - 1) <= 0.02
    assert abs(moe.total / l3.total - 1) <= 0.02
    assert configs["l3"].l3.cap == 512 and len(configs["l3"].l3.positions) == 2


def test_unknown_names_get_a_suggestion():
    with pytest.raises(ValueError, match=r"unknown preset 'smal'; did you mean 'small'\?"):
        presets.get("smal")
    with pytest.raises(ValueError, match=r"unknown preset 'paper-800M'; did you mean 'paper-800m'\?"):
        presets.get("paper-800M")
    with pytest.raises(ValueError, match=r"unknown preset 'gpt5' \(known: debug, tiny"):
        presets.get("gpt5")
    with pytest.raises(ValueError, match=r"unknown family 'ngram' for preset 'tiny'"):
        presets.get("tiny", "ngram")


@pytest.mark.parametrize(
    ("name", "family", "active", "total"),
    [
        ("paper-800m", "dense", 809e6, 809e6),  # Table 1: dense active = total
        ("paper-800m", "l3", 803e6, 3.1e9),
        ("paper-1.5b", "dense", 1.5e9, 1.5e9),
        ("paper-2.6b", "dense", 2.6e9, 2.6e9),
        ("paper-2.6b", "l3", 2.6e9, 7e9),
    ],
)
def test_paper_sizes_reproduce_table_1(name, family, active, total):
    """Counted as L3_SPEC §5 (embeddings fully), each preset is within 3% of the paper's Table 1."""
    cfg = presets.get(name, family)
    pc = count_params(cfg)
    assert abs(pc.active / active - 1) <= 0.03
    assert abs(pc.total / total - 1) <= 0.03
    if family == "l3":
        assert cfg.vocab_size == 180_000 and cfg.l3.budget == 710_000 and cfg.l3.d_up == 4096
        assert cfg.dim // 2 <= cfg.l3.d_emb <= 0.6 * cfg.dim  # "about half the hidden size"


def test_table_lists_every_preset(capsys):
    presets.main()
    out = capsys.readouterr().out
    for name in presets.names():
        assert name in out
    assert "sparsity" in out

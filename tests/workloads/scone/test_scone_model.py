"""The scone family in the one Transformer: replacement, padding independence, accounting, bad input."""

from dataclasses import replace

import pytest
import torch

from workloads.jobs.optim import param_bytes
from workloads.models import presets
from workloads.models.accounting import count_params, fgram_model_params, fgram_table_bytes
from workloads.models.config import SconeConfig
from workloads.models.isosparse import TOLERANCE
from workloads.models.transformer import Transformer
from workloads.scone.tagging import SuffixMatcher

V = 32  # conftest's vocabulary


def test_tagged_positions_take_the_fgram_output_others_the_token_embedding(fgrams, corpus, model_for):
    model = model_for(fgrams)
    seq = torch.from_numpy(corpus(0)[2][:40]).long()[None]  # (1, 40)
    tags = torch.from_numpy(SuffixMatcher(fgrams).tag(seq[0].numpy()))[None]
    assert 0 < int((tags >= 0).sum()) < 40
    with torch.no_grad():
        h = model.embed(seq, tags)
        for i in range(40):
            r = int(tags[0, i])
            if r < 0:
                want = model.tok_emb.weight[seq[0, i]]
            else:  # A_fgram alone on exactly this f-gram, no padding
                n = int(fgrams.lengths[r])
                toks = torch.from_numpy(fgrams.tokens[r, :n]).long()[None]
                want = model.fgram(model.tok_emb(toks), torch.tensor([n]))[0]
            torch.testing.assert_close(h[0, i], want, rtol=1e-5, atol=1e-6)


def test_replacement_changes_logits_only_from_tagged_positions_on(fgrams, corpus, model_for):
    model = model_for(fgrams)
    seq = torch.from_numpy(corpus(0)[1][:30]).long()[None]
    tags = torch.from_numpy(SuffixMatcher(fgrams).tag(seq[0].numpy()))[None]
    first = int(torch.nonzero(tags[0] >= 0)[0])
    with torch.no_grad():
        with_f, _ = model(seq, fgram_ids=tags)
        without, _ = model(seq, fgram_ids=torch.full_like(tags, -1))
    torch.testing.assert_close(with_f[:, :first], without[:, :first])
    assert not torch.allclose(with_f[:, first], without[:, first])


def test_gradients_reach_a_fgram(fgrams, corpus, model_for):
    model = model_for(fgrams).train()
    seq = torch.from_numpy(corpus(0)[2][:40]).long()[None]
    tags = torch.from_numpy(SuffixMatcher(fgrams).tag(seq[0].numpy()))[None]
    logits, _ = model(seq, fgram_ids=tags)
    logits.float().logsumexp(-1).mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.fgram.parameters())


def test_accounting_equals_module_counts(fgrams, model_for):
    cases = (({}, 2), ({"fgram_layers": 3}, 3), ({"depth_multiplier": 0.5}, 1), ({"fgram_ffn_dim": 24}, 2))
    for scone, blocks in cases:
        model = model_for(fgrams, **scone)
        cfg = model.config
        pc = count_params(cfg)
        assert pc.total == sum(p.numel() for p in model.parameters())
        assert pc.by_category["fgram_model"] == sum(p.numel() for p in model.fgram.parameters())
        assert pc.by_category["fgram_model"] == fgram_model_params(cfg)
        assert len(model.fgram.layers) == cfg.scone.layers(cfg.n_layers) == blocks
        width = scone.get("fgram_ffn_dim", cfg.ffn_dim)  # A_fgram's MLP width (the main model's unless set)
        assert all(block.mlp.w1.weight.shape == (width, 32) for block in model.fgram.layers)
        # inference-resident = A_main + the whole token embedding + head; A_fgram is training-time only
        resident = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("fgram."))
        assert pc.active == resident and pc.active_by_category["embeddings"] == 2 * V * 32
        assert pc.active_by_category["fgram_model"] == 0
        assert param_bytes(model)["fgram_model"] == 4 * pc.by_category["fgram_model"]
    assert fgram_table_bytes(cfg, 2) == fgrams.n_fgrams * 32 * 2


def test_presets_and_the_matcher():
    for name in presets.names():
        cfg, dense = presets.get(name, "scone"), presets.get(name, "dense")
        assert cfg.family == "scone" and cfg.n_layers == dense.n_layers and cfg.dim == dense.dim
        assert abs(count_params(cfg).active / count_params(dense).active - 1) <= TOLERANCE
    olmo = presets.get("paper-olmo-1b", "scone")
    assert (olmo.scone.n_fgrams, olmo.scone.max_n, olmo.dim, olmo.n_layers) == (10_000_000, 5, 2048, 16)
    assert fgram_table_bytes(olmo) == 10_000_000 * 2048 * 2  # 41 GB at fp16, the paper's figure


def test_bad_input_names_the_field(fgrams, model_for, config_for):
    with pytest.raises(ValueError, match=r"SconeConfig\.max_n must be >= 2, got 1"):
        SconeConfig(n_fgrams=4, max_n=1)
    with pytest.raises(ValueError, match=r"SconeConfig\.n_fgrams must be >= 1"):
        SconeConfig(n_fgrams=0)
    with pytest.raises(ValueError, match="needs a scone config"):
        replace(config_for(4), scone=None)
    with pytest.raises(ValueError, match="needs its f-grams"):
        Transformer(config_for(4))
    with pytest.raises(ValueError, match="scone.n_fgrams=4 rows"):
        Transformer(config_for(4), fgrams=fgrams)
    model = model_for(fgrams)
    with pytest.raises(ValueError, match="needs fgram_ids"):
        model(torch.zeros(1, 3, dtype=torch.long))

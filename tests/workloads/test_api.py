"""workloads.api.model_facts: a model's counts as the plain data `clusters.shapes.ModelShape` takes, with
the L3 rows per token weighted by the corpus (hand-worked one-token corpora)."""

import numpy as np

from clusters.shapes import L3Shape, ModelShape
from workloads.api import model_facts, preset_model


def test_l3_rows_per_token_follow_the_corpus_and_the_tables_count_every_row():
    cfg = preset_model("debug", "l3")
    v, b, n = cfg.vocab_size, cfg.l3.budget, len(cfg.l3.positions)
    width = cfg.dim + (0 if cfg.l3.tied else cfg.l3.d_emb)
    counts = np.ones(v, dtype=np.int64)
    counts[0] = b - (v - 1)  # token 0 owns every row the others do not
    on = {p: counts for p in cfg.l3.positions}
    for token, mean in ((1, 1.0), (0, float(b - v + 1))):
        freqs = np.zeros(v)
        freqs[token] = 3.0
        facts = model_facts(cfg, freqs, on)
        assert facts["l3"]["rows_per_token_mean"] == mean
        assert facts["l3"]["rows_per_token_max"] == b - v + 1
    assert model_facts(cfg)["l3"]["rows_per_token_mean"] == b / v  # no corpus: budget / vocab
    assert facts["params_l3_tables"] == n * b * width and facts["l3"]["rows"] == b
    assert facts["moe"] is None and facts["fgram_rows"] == 0
    l3 = facts.pop("l3")
    shape = ModelShape(name="m", **{**facts, "moe": None}, l3=L3Shape(**l3))
    assert shape.l3.rows_per_token_max == b - v + 1

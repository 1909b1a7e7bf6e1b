"""The scone family through the train job: a debug SCONE model learns on the built-in corpus; metrics."""

import json
import statistics
from pathlib import Path

import numpy as np
import pytest

from workloads.data import DataConfig
from workloads.jobs.result import JobContext
from workloads.jobs.setup import prepare_data, resolve_model_config, resolve_scone
from workloads.jobs.spec import ModelOverrides, ModelSpec
from workloads.jobs.train import TrainJobConfig, run
from workloads.models.accounting import count_params
from workloads.scone.tagging import longest_suffix_reference

DATA = DataConfig(max_documents=50, val_fraction=0.2, seq_len=32)
OVERRIDES = ModelOverrides(vocab_size=512)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    path = tmp_path_factory.getbasetemp() / "scone-cache"
    path.mkdir(exist_ok=True)
    return str(path)


def test_pipeline_tags_each_split_once_with_the_train_fgrams(cache_dir):
    cfg = resolve_model_config(ModelSpec("debug", "scone", OVERRIDES))
    data = prepare_data(DATA, cfg, cache_dir)
    sd = resolve_scone(cfg, data, cache_dir)
    assert sd.fgrams.n_fgrams == cfg.scone.n_fgrams and sd.fgrams.corpus_fingerprint == data.fingerprint
    assert sd.fgrams.n_tokens == data.train.n_tokens - data.train.n_documents  # separators excluded
    for split in ("train", "val"):
        tokens = np.asarray(data.split(split).tokens)
        window = slice(0, 3000)
        want = longest_suffix_reference(tokens[window], sd.fgrams.as_tuples())
        assert np.array_equal(np.asarray(sd.tags[split][window]), want)
        assert np.all(np.asarray(sd.tags[split])[tokens == data.eot_id] == -1)  # no f-gram holds it
    again = resolve_scone(cfg, data, cache_dir)  # from the cache
    assert again.path == sd.path and np.array_equal(again.tags["val"], sd.tags["val"])


def test_debug_scone_learns_and_reports(cache_dir):
    losses: dict[int, float] = {}
    cfg = TrainJobConfig(
        preset="debug", family="scone", overrides=OVERRIDES, data=DATA, seq_len=32, batch_size=8, steps=40,
        lr=3e-3, lr_warmup_steps=4, eval_batches=2, timing_warmup_steps=1, log_every=5,
    )  # fmt: skip
    ctx = JobContext(cache_dir=cache_dir, on_metrics=lambda m, s: losses.update(
        {s: m["train/loss"]} if "train/loss" in m else {}))  # fmt: skip
    result = run(cfg, ctx)
    curve = [losses[s] for s in range(40)]
    first, last = statistics.mean(curve[:5]), statistics.mean(curve[-5:])
    assert last < first - 0.5, (first, last)  # 40 steps: 6.14 -> 5.36 measured
    m = result.metrics
    assert 0.2 < m["lb/scone_match_rate"] < 1.0 and 2.0 <= m["lb/scone_mean_match_len"] <= 5.0
    model_cfg = resolve_model_config(cfg.model_spec())
    assert m["mem/fgram_table_bytes"] == model_cfg.scone.n_fgrams * model_cfg.dim * 4
    pc = count_params(model_cfg)
    assert m["params_active"] == pc.active and m["params_total"] == pc.total > pc.active
    assert m["mem/params_bytes/fgram_model"] == 4 * pc.by_category["fgram_model"]
    extra = 6 * pc.by_category["fgram_model"] * m["train/fgram_tokens_per_token"]  # A_fgram's share
    assert m["train/flops_per_token"] == pytest.approx(m["train/flops_per_token_main"] + extra)
    assert 0 < m["train/fgram_tokens_per_token"] <= 5 * m["lb/scone_match_rate"]
    assert json.loads(result.info["fgram_summary"])["n_fgrams"] == model_cfg.scone.n_fgrams
    assert m["eval/val_loss"] < first


def test_infer_job_serves_f_on_device_and_offloaded(cache_dir):
    from workloads.jobs.infer import InferJobConfig
    from workloads.jobs.infer import run as infer

    cfg = InferJobConfig(
        preset="debug", family="scone", overrides=OVERRIDES, data=DATA, batch_sizes=(1, 2), prompt_len=16,
        gen_len=4, l3_placement="both", warmup=0, repeats=1, device="cpu",
    )  # fmt: skip
    m = infer(cfg, JobContext(cache_dir=cache_dir)).metrics
    model_cfg = resolve_model_config(cfg.model_spec())
    assert m["mem/fgram_table_bytes"] == model_cfg.scone.n_fgrams * model_cfg.dim * 4
    for bs in (1, 2):
        assert m[f"infer/decode_tokens_per_s/bs{bs}"] > 0
        assert m[f"infer/offload/decode_tokens_per_s/bs{bs}"] > 0
        assert 0 < m[f"lb/scone_match_rate/bs{bs}"] < 1 and m[f"infer/scone_lookup_us_per_token/bs{bs}"] > 0
        # a decode step sends B mask bytes, then <= B matched ids, offsets and rows in 64-byte aligned
        # segments (CPU: staged in host memory only)
        staged = m[f"infer/offload/host_compact_bytes_per_decode_step/bs{bs}"]
        assert 0 < staged <= bs + 3 * 64 + bs * (8 + 8 + model_cfg.dim * 4)
    assert m["mem/offload/host_table_bytes"] == m["mem/fgram_table_bytes"]


def test_infer_job_serves_f_from_a_memory_mapped_file(cache_dir):
    from workloads.jobs.infer import InferJobConfig
    from workloads.jobs.infer import run as infer

    cfg = InferJobConfig(
        preset="debug", family="scone", overrides=OVERRIDES, data=DATA, batch_sizes=(2,), prompt_len=16,
        gen_len=4, l3_placement="offload", fgram_offload="disk", warmup=0, repeats=1, device="cpu",
    )  # fmt: skip
    result = infer(cfg, JobContext(cache_dir=cache_dir))
    m = result.metrics
    assert m["infer/offload/decode_tokens_per_s/bs2"] > 0 and 0 < m["lb/scone_match_rate/bs2"] < 1
    assert m["mem/offload/host_table_bytes"] == m["mem/fgram_table_bytes"]  # the mapped file's bytes
    assert list((Path(cache_dir) / "scone").glob("F-*.npy"))  # F was written and mapped

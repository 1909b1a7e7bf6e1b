"""Section `scone`: f-gram discovery and longest-suffix tagging tokens/s over the built-in corpus's training
split, then greedy decode of the dense `tiny` model next to SCONE with its f-gram table F on the device, in
host memory and in a memory-mapped file (`workloads.scone.serve`), generations interleaved. Weights are
random: throughput does not depend on them; the match rate comes from the real corpus.
Details: docs/workloads.md#workloadsbenchscone."""

import tempfile
import time
from dataclasses import replace
from pathlib import Path

from workloads.bench.rows import BASELINE, COMPARISON, REPORTED, BenchContext, Row, timed_row
from workloads.data import BuiltinSource, DataConfig
from workloads.jobs.decode import GenerationTimer
from workloads.jobs.setup import build_model, prepare_data, resolve_model_config
from workloads.jobs.spec import ModelSpec
from workloads.models.accounting import count_params, decode_step_cost
from workloads.scone.discovery import discover_fgrams_flat
from workloads.scone.serve import FgramTable
from workloads.scone.tagging import SuffixMatcher

PLACEMENTS = {"F device": "device", "F host": "host", "F mmap": "disk"}


def _timed(fn, repeats: int) -> tuple[object, list[float]]:
    out, samples = None, []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        samples.append(time.perf_counter() - t0)
    return out, samples


def rows(ctx: BenchContext) -> list[Row]:
    prompt_len, gen_len, bs = (32, 6, 1) if ctx.quick else (64, 24, 1)
    cfgs = {f: resolve_model_config(ModelSpec("tiny", f)) for f in ("dense", "scone")}
    data = prepare_data(DataConfig(source=BuiltinSource(content="docs"), seq_len=prompt_len), cfgs["dense"])
    train, sc = data.train, cfgs["scone"].scone
    starts, ends = train.doc_offsets[:-1], train.doc_offsets[1:] - 1
    discover = lambda: discover_fgrams_flat(  # noqa: E731
        train.tokens,
        starts,
        ends,
        cfgs["scone"].vocab_size,
        sc.n_fgrams,
        max_n=sc.max_n,
        min_count=sc.min_count,
        corpus_fingerprint="bench",
    )
    discover()  # numba compile
    repeats = 2 if ctx.quick else 3
    fgrams, disc = _timed(discover, repeats)
    matcher = SuffixMatcher(fgrams)
    matcher.tag(train.tokens[:1000])
    tags, tag = _timed(lambda: matcher.tag(train.tokens), repeats)
    n = float(train.n_tokens)
    out = [
        replace(
            timed_row("scone", "discovery", disc, ctx.probe, nbytes=4 * n, flops=0.0), items=n
        ).without_goal(REPORTED),
        replace(
            timed_row("scone", "tagging", tag, ctx.probe, nbytes=4 * n, flops=0.0),
            items=n,
            note=f"train match rate {(tags >= 0).mean():.3f}",
        ).without_goal(REPORTED),
    ]
    extra = {"dense": {}, "scone": {"fgrams": fgrams}}
    models = {f: build_model(cfg, None, ctx.device, seed=0, **extra[f]).eval() for f, cfg in cfgs.items()}
    with tempfile.TemporaryDirectory(prefix="scone-bench-") as tmp:
        table = FgramTable(matcher, models["scone"].precompute_fgram_table(), path=Path(tmp) / "F.npy")
        prompts, _ = next(data.packed("val", prompt_len, shuffle=False).batches(bs))
        prompts = prompts.to(ctx.device)
        variants = ["dense", *PLACEMENTS]
        timers = {v: GenerationTimer(ctx.device, gen_len, warmup=1) for v in variants}
        for _ in range(1 + ctx.rounds):
            for v in variants:
                server = None if v == "dense" else table.serve(models["scone"], PLACEMENTS[v])
                try:
                    timers[v].generate(models["dense" if v == "dense" else "scone"], prompts)
                finally:
                    if server is not None:
                        server.remove()
    dense = None
    for v in variants:
        cfg = cfgs["dense" if v == "dense" else "scone"]
        nbytes, flops = decode_step_cost(cfg, count_params(cfg), bs, prompt_len + gen_len / 2)
        nbytes += 0 if v == "dense" else bs * cfg.dim * table.table.element_size()  # F rows
        row = timed_row(
            "scone",
            f"decode bs{bs} {v}",
            timers[v].decode.samples_s()[gen_len - 1 :],
            ctx.probe,
            nbytes=nbytes,
            flops=flops,
        )
        row = replace(row, items=bs)
        if dense is None:
            dense = row
            out.append(row.without_goal(BASELINE))
        else:
            out.append(replace(row, value=dense.median_s / row.median_s).without_goal(COMPARISON))
    return out

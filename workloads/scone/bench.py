"""SCONE benchmark: `python -m workloads.scone.bench [--preset tiny] [--device auto]` prints one table.

Discovery and tagging tokens/s on the built-in corpus's training split (wall and per-core CPU time), then
greedy decode tokens/s at each batch size for: the dense model, SCONE with F on the device, and SCONE with
F offloaded to host memory, and SCONE with F in a memory-mapped file (`workloads.scone.serve`), all in one
process with their generations
interleaved (warm-up excluded, medians), plus the host lookup time per token. Weights are random: the
throughput does not depend on them, the match rate comes from the real corpus.
"""

import argparse
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from workloads.data import BuiltinSource, DataConfig
from workloads.jobs.decode import GenerationTimer
from workloads.jobs.setup import ModelSpec, build_model, prepare_data, resolve_model_config
from workloads.scone.discovery import discover_fgrams_flat
from workloads.scone.serve import FgramTable
from workloads.scone.tagging import SuffixMatcher

VARIANTS = ("dense", "scone F on device", "scone F offloaded", "scone F mmap file")
PLACEMENT = {"scone F on device": "device", "scone F offloaded": "host", "scone F mmap file": "disk"}


def _timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def discovery_rates(data, scone_cfg) -> tuple:
    """(f-grams, matcher, {name: (tokens/s wall, tokens/s per core CPU)}) on the training split."""
    train = data.train
    starts, ends = train.doc_offsets[:-1], train.doc_offsets[1:] - 1
    run = lambda: discover_fgrams_flat(  # noqa: E731
        train.tokens, starts, ends, scone_cfg.vocab_size, scone_cfg.scone.n_fgrams,
        max_n=scone_cfg.scone.max_n, min_count=scone_cfg.scone.min_count, corpus_fingerprint="bench",
    )  # fmt: skip
    run()  # compile
    fgrams, wall, cpu = _timed(run)
    matcher = SuffixMatcher(fgrams)
    matcher.tag(train.tokens[:1000])
    tags, t_wall, t_cpu = _timed(lambda: matcher.tag(train.tokens))
    n = train.n_tokens
    rates = {"discovery": (n / wall, n / cpu), "tagging": (n / t_wall, n / t_cpu)}
    return fgrams, matcher, rates, float((tags >= 0).mean())


def decode_rates(models: dict, table: FgramTable, prompts: torch.Tensor, gen_len: int, repeats: int) -> dict:
    """{variant: (decode tokens/s, lookup µs per token or None)} for one batch of prompts, interleaved."""
    timers = {v: GenerationTimer(prompts.device, gen_len, warmup=1) for v in VARIANTS}
    lookup = {v: [] for v in VARIANTS}
    for _ in range(1 + repeats):
        for variant in VARIANTS:
            model = models["dense" if variant == "dense" else "scone"]
            server = None
            if variant != "dense":
                server = table.serve(model, PLACEMENT[variant])
            try:
                timers[variant].generate(model, prompts)
            finally:
                if server is not None:
                    lookup[variant].append(server.stats.lookup_us_per_token)
                    server.remove()
    out = {}
    for variant in VARIANTS:
        decode = timers[variant].summary().decode
        us = sorted(lookup[variant])[len(lookup[variant]) // 2] if lookup[variant] else None
        out[variant] = (prompts.shape[0] / decode.median_s, us)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--prompt-len", type=int, default=64)
    parser.add_argument("--gen-len", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = "bfloat16" if device.type == "cuda" else "float32"
    cfgs = {f: resolve_model_config(ModelSpec(args.preset, f)) for f in ("dense", "scone")}
    cfgs = {f: replace(cfg, dtype=dtype) for f, cfg in cfgs.items()}
    data_cfg = DataConfig(source=BuiltinSource(content="docs"), seq_len=args.prompt_len)
    data = prepare_data(data_cfg, cfgs["dense"])
    fgrams, matcher, rates, match_rate = discovery_rates(data, cfgs["scone"])
    models = {
        "dense": build_model(cfgs["dense"], None, device, seed=0).eval(),
        "scone": build_model(cfgs["scone"], None, device, seed=0, fgrams=fgrams).eval(),
    }
    tmp = tempfile.TemporaryDirectory(prefix="scone-bench-")
    F = models["scone"].precompute_fgram_table()
    table = FgramTable(matcher, F, path=Path(tmp.name) / "F.npy")
    prompts, _ = next(data.packed("val", args.prompt_len, shuffle=False).batches(max(args.batch_sizes)))
    prompts = prompts.to(device)
    print(
        f"preset {args.preset!r} on {device} ({dtype}); train split {data.train.n_tokens:,} tokens; "
        f"{fgrams.n_fgrams:,} f-grams of {fgrams.n_candidates:,} candidates; train match rate "
        f"{match_rate:.3f}; F = {table.table.nbytes / 2**20:.1f} MiB"
    )
    for name, (wall, cpu) in rates.items():
        print(f"{name:>10}: {wall / 1e6:7.2f} M tokens/s wall, {cpu / 1e6:7.2f} M tokens/s per core (CPU)")
    header = ("batch", "variant", "decode tok/s", "vs F on device", "lookup µs/tok")
    print(f"{header[0]:>5} | {header[1]:<18} | {header[2]:>12} | {header[3]:>14} | {header[4]:>13}")
    for bs in args.batch_sizes:
        res = decode_rates(models, table, prompts[:bs], args.gen_len, args.repeats)
        on_device = res["scone F on device"][0]
        for variant, (tps, us) in res.items():
            lookup = "" if us is None else f"{us:.1f}"
            print(f"{bs:>5} | {variant:<18} | {tps:>12,.1f} | {tps / on_device:>14.3f} | {lookup:>13}")
    print(f"load average: {os.getloadavg()}, torch threads {torch.get_num_threads()}")


if __name__ == "__main__":
    main()

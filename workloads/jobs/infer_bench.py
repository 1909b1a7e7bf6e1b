"""Decode benchmark of the matched families: `python -m workloads.jobs.infer_bench [preset]` (also
`python -m workloads.jobs.infer`). All families' generations (L3 on the device and offloaded included)
are interleaved in one process (`infer.run_interleaved`), so the ratios hold on a noisy shared machine.
Prints per family × placement × batch the prefill / TTFT / decode medians, then the ratios of decode
tokens/s: L3 on device ÷ dense, L3 offloaded ÷ L3 on device, MoE ÷ dense, and the host time each L3
layer waited for its offloaded rows. Goals (issue 15): L3 ≥ 0.95× dense, offloaded ≥ 0.97× on device.
"""

import argparse
import os

import torch
from rich.console import Console
from rich.table import Table

from workloads.jobs.infer import InferJobConfig, run_interleaved


def _table_rows(family: str, places: tuple[str, ...], cfg: InferJobConfig, m: dict) -> list[list[str]]:
    rows = []
    for placement in places:
        p = "" if placement == "device" else "offload/"  # "offload" (CUDA) or "host-compact" (CPU)
        for bs in cfg.batch_sizes:
            moved = [
                m.get(f"infer/offload/{n}_bytes_per_decode_step/bs{bs}") for n in ("h2d", "host_compact")
            ]
            h2d = next((v for v in moved if v is not None), None) if p else None
            wait = m.get(f"infer/offload_wait_s/bs{bs}") if p else None
            rows.append([
                family, placement, str(bs),
                f"{m[f'infer/{p}prefill_tokens_per_s/bs{bs}']:,.0f}",
                f"{1e3 * m[f'infer/{p}ttft_s/bs{bs}']:.1f}",
                f"{m[f'infer/{p}decode_tokens_per_s/bs{bs}']:,.1f}",
                "" if h2d is None else f"{h2d / 1024:,.1f}",
                "" if wait is None else f"{wait * 1e6:,.0f}",
            ])  # fmt: skip
    return rows


def _ratios(cfg: InferJobConfig, res: dict[str, dict]) -> Table:
    t = Table(title="decode tokens/s ratios (medians of interleaved generations)")
    for col in ("batch", "L3 device ÷ dense", "L3 offloaded ÷ L3 device", "MoE ÷ dense"):
        t.add_column(col, justify="right")
    key = "infer/decode_tokens_per_s/bs{}"

    def ratio(a: str, b: str, bs: int, a_key: str = key) -> str:
        if a not in res or b not in res:
            return ""
        return f"{res[a][a_key.format(bs)] / res[b][key.format(bs)]:.3f}"

    for bs in cfg.batch_sizes:
        offload = ratio("l3", "l3", bs, "infer/offload/decode_tokens_per_s/bs{}")
        t.add_row(str(bs), ratio("l3", "dense", bs), offload, ratio("moe", "dense", bs))
    return t


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m workloads.jobs.infer_bench", description=__doc__.split("\n")[0]
    )
    parser.add_argument("preset", nargs="?", default="tiny")
    parser.add_argument("--families", nargs="+", default=["dense", "l3", "moe"])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--gen-len", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    cfgs = [
        InferJobConfig(
            args.preset,
            family,
            batch_sizes=tuple(args.batch_sizes),
            prompt_len=args.prompt_len,
            gen_len=args.gen_len,
            repeats=args.repeats,
            device=args.device,
        )  # fmt: skip
        for family in args.families
    ]
    results = run_interleaved(cfgs)
    table = Table(title=f"isosparse inference, preset {args.preset!r} (medians, all families interleaved)")
    columns = ("family", "placement", "batch", "prefill tok/s", "TTFT ms", "decode tok/s")
    columns += ("copied KiB/decode step (H2D on CUDA; host-compact on CPU)", "L3 wait µs/call")
    for column in columns:
        table.add_column(column, justify="left" if column in ("family", "placement") else "right")
    for cfg, result in zip(cfgs, results, strict=True):
        places = tuple(result.info["placements"].split(","))
        for row in _table_rows(cfg.family, places, cfg, result.metrics):
            table.add_row(*row)
        table.add_section()
    console = Console(width=max(Console().width, 120))
    console.print(table)
    console.print(_ratios(cfgs[0], {c.family: r.metrics for c, r in zip(cfgs, results, strict=True)}))
    console.print(f"load average (1, 5, 15 min): {os.getloadavg()}; torch threads: {torch.get_num_threads()}")


if __name__ == "__main__":
    main()

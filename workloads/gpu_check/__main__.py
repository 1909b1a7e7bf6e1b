"""`python -m workloads.gpu_check --out DIR [--dry-run]`: run every check, write DIR/gpu_check.json, print
the table. Sections run in order within a time budget (default 7 minutes of the 8 allowed); one that
fails or would start past the budget is recorded as such and the rest still run.
"""

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path


def _args(argv):
    p = argparse.ArgumentParser(prog="python -m workloads.gpu_check", description=__doc__)
    p.add_argument("--out", required=True, type=Path, help="directory for gpu_check.json")
    p.add_argument(
        "--dry-run", action="store_true", help="tiny shapes on CPU, Triton interpreted, no timings"
    )
    p.add_argument("--budget-s", type=float, default=420.0, help="no section starts after this (default 420)")
    return p.parse_args(argv)


def _plan(dry: bool) -> dict:
    """Shapes per mode: the `small` preset on a GPU; `debug` and a few tokens in a dry run."""
    if dry:
        return {
            "preset": "debug",
            "batch": 2,
            "seq": 16,
            "steps": 1,
            "repeats": 1,
            "warmup": 0,
            "decode": (1, 8, 64),
            "prompt": 4,
            "gen": 3,
        }
    return {
        "preset": "small",
        "batch": 8,
        "seq": 1024,
        "steps": 10,
        "repeats": 20,
        "warmup": 2,
        "decode": (1, 8, 64),
        "prompt": 64,
        "gen": 32,
    }


def _sections(device, dry: bool, peak):
    from workloads.gpu_check import lookup_checks as lc
    from workloads.gpu_check import model_checks as mc

    p = _plan(dry)
    impls = ["sorted", "triton"]
    return {
        "correctness": lambda: lc.correctness(device, small=dry),
        "bandwidth": lambda: lc.bandwidth(device, dry, peak, p["repeats"], p["warmup"]),
        "train_step": lambda: mc.train_steps(
            p["preset"], impls, device, p["batch"], p["seq"], p["steps"], p["warmup"]
        ),
        "decode": lambda: mc.decode(p["preset"], device, p["decode"], p["prompt"], p["gen"]),
        "host_syncs": lambda: mc.host_syncs(p["preset"], impls, device, p["batch"], p["seq"]),
    }


def _env(device) -> dict:
    import torch
    import triton

    from workloads.gpu_check.catalog import hbm_peak

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    entry, peak = hbm_peak(name)
    return {
        "device_name": name,
        "catalog_entry": entry,
        "hbm_bytes_per_s": peak,
        "torch": torch.__version__,
        "triton": triton.__version__,
        "python": sys.version.split()[0],
    }


def run(out_dir: Path, dry: bool, budget_s: float) -> dict:
    if dry:  # must precede the first import of the kernels (the @triton.jit decorator reads it)
        os.environ["TRITON_INTERPRET"] = "1"
    import torch

    from workloads.gpu_check import report

    if not dry and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --dry-run to exercise the check on CPU")
    device = torch.device("cpu" if dry else "cuda")
    env = _env(device)
    notes = ["MoE skipped: its blocks need deepspeed, which the GPU image does not have"]
    if not dry and env["hbm_bytes_per_s"] is None:
        notes.append(f"{env['device_name']!r} is not in clusters/catalog.yaml: no fraction of peak")
    result = {"dry_run": dry, "env": env, "plan": _plan(dry), "notes": notes, "sections": {}}
    start = time.perf_counter()
    for name, fn in _sections(device, dry, env["hbm_bytes_per_s"]).items():
        elapsed = time.perf_counter() - start
        if elapsed > budget_s:
            result["sections"][name] = {"skipped": f"time budget {budget_s:.0f} s spent ({elapsed:.0f} s)"}
            continue
        t0 = time.perf_counter()
        try:
            rows = fn()
            rows = report.blank_timings(rows) if dry else rows
            result["sections"][name] = {"rows": rows, "seconds": time.perf_counter() - t0}
        except Exception as exc:  # a failed section is reported; the others still run
            result["sections"][name] = {
                "error": f"{type(exc).__name__}: {exc}",
                "trace": traceback.format_exc(),
            }
        if device.type == "cuda":
            torch.cuda.empty_cache()
    result["total_s"] = time.perf_counter() - start
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "gpu_check.json").write_text(json.dumps(result, indent=2))
    print(report.render(result))
    print(f"\nwrote {out_dir / 'gpu_check.json'} in {result['total_s']:.1f} s")
    return result


def main(argv=None) -> int:
    args = _args(argv)
    result = run(args.out, args.dry_run, args.budget_s)
    failed = [n for n, s in result["sections"].items() if "error" in s]
    bad = [r for r in result["sections"].get("correctness", {}).get("rows", []) if not r["ok"]]
    return 1 if failed or bad else 0


if __name__ == "__main__":
    sys.exit(main())

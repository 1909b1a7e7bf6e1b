"""`isosparse plan` and `isosparse clusters ...`: capacity planning and cluster files, a typer sub-app
that cli/main.py registers (`app.command("plan")`, `app.add_typer(clusters_app)`). The api and the planner
are imported when a command runs (start-up latency: cli/main.py's docstring).
Details: docs/orchestrator.md#orchestratorcliclusters.
"""

import os
import shutil
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import pandas as pd
import typer
from rich.console import Console
from rich.table import Table

from orchestrator.cli import render
from orchestrator.runs.store_path import TrackingError

if TYPE_CHECKING:
    from clusters.spec import Cluster
    from orchestrator.planning import plan as planning

clusters_app = typer.Typer(help="Cluster files: show them, write KubeRay manifests.", no_args_is_help=True)
GIB = float(1 << 30)


def _console() -> Console:
    return Console(width=render.console().width, highlight=False)  # the terminal's (piped: render's) width


def bad_input(err: Exception) -> typer.Exit:
    """Print a user-facing error as plain text (no markup: brackets and caret lines survive); exit 2.
    In a terminal (or with COLUMNS set) a line longer than the width wraps at words, indented under its
    own start; piped without COLUMNS each error stays one line, for grep."""
    text = f"error: {err}"
    columns = os.environ.get("COLUMNS", "").strip()
    if sys.stdout.isatty() or columns.isdigit():
        width = shutil.get_terminal_size((80, 24)).columns if not columns.isdigit() else int(columns)
        text = "\n".join(_wrapped(line, max(width, 40)) for line in text.splitlines())
    typer.echo(text)
    return typer.Exit(2)


def _wrapped(line: str, width: int) -> str:
    if len(line) <= width:
        return line
    indent = " " * (len(line) - len(line.lstrip()) + 4)
    return textwrap.fill(line, width, subsequent_indent=indent, break_on_hyphens=False)


def _gib(n_bytes: float) -> str:
    return f"{n_bytes / GIB:,.2f} GiB"


def _duration(seconds: float) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:,.1f} days"
    return f"{seconds / 3600:,.2f} h" if seconds >= 3600 else f"{seconds:,.1f} s"


def cluster_table(cluster: "Cluster", width: int = 80, wide: bool = False) -> Table:
    """group, accelerator and GPUs, then nodes and the per-node resources while they fit the terminal."""
    desc = f": {cluster.description}" if cluster.description else ""
    rows = []
    for g in cluster.nodes:
        nodes = f"{g.count}" if g.min_count == g.max_count else f"{g.count} ({g.min_count}..{g.max_count})"
        rows.append(
            [
                g.name,
                nodes,
                g.accelerator,
                str(g.gpus_per_node),
                str(g.cpus_per_node),
                _gib(g.memory_bytes),
                str(g.gpus),
            ]
        )
    columns = ["group", "nodes", "accelerator", "GPUs/node", "CPUs/node", "memory/node", "GPUs"]
    title = f"cluster {cluster.name} ({cluster.kind}){desc}"
    optional = ["nodes", "GPUs/node", "CPUs/node", "memory/node"]
    df = pd.DataFrame(rows, columns=columns)
    right = ("nodes", "GPUs/node", "CPUs/node", "memory/node", "GPUs")
    required = ["group", "accelerator", "GPUs"]
    return render.fitted_table(df, title, required, optional, width, wide, right=right)


@clusters_app.command("show")
def show(
    file: Annotated[str, typer.Argument(help="A cluster YAML file.")],
    wide: Annotated[bool | None, typer.Option("--wide", help="Every column.")] = None,
) -> None:
    """Validate a cluster file and print its node groups, accelerator and Ray address."""
    from orchestrator.suites.cluster_file import load_cluster  # here: start-up latency (cli/main.py)

    try:
        cluster = load_cluster(file)
    except ValueError as err:
        raise bad_input(err) from None
    out = _console()
    render.print_table(out, cluster_table(cluster, out.width, bool(wide)), bool(wide))
    acc = cluster.accelerator
    peak = acc.peak("bfloat16")
    out.print(f"address: {cluster.address or 'in-process (ray.init())'}; total GPUs: {cluster.total_gpus}")
    out.print(
        f"accelerator: {acc.name} ({acc.description})"
        + (f", {_gib(acc.memory_bytes)}, bf16 {peak / 1e12:,.0f} TFLOP/s dense" if peak else "")
    )
    if cluster.price_per_gpu_hour is not None:
        out.print(f"price: ${cluster.price_per_gpu_hour:.2f} per GPU-hour")


@clusters_app.command("kuberay")
def kuberay_manifest(
    file: Annotated[str, typer.Argument(help="A cluster file of kind 'kuberay'.")],
    suite: Annotated[str | None, typer.Option(help="Write a RayJob running `isosparse run SUITE`.")] = None,
    out: Annotated[str | None, typer.Option(help="Write the manifest here instead of stdout.")] = None,
) -> None:
    """Write the KubeRay RayCluster manifest of FILE (or, with --suite, a RayJob that runs the suite)."""
    from orchestrator import api  # here, not at the top: start-up latency (see cli/main.py)

    try:
        text = api.cluster_manifest(file, suite)
    except ValueError as err:
        raise bad_input(err) from None
    if out is None:
        typer.echo(text, nl=False)
        return
    Path(out).write_text(text)
    _console().print(f"wrote {out} ({'RayJob' if suite else 'RayCluster'})")


def _memory_table(plan: "planning.TrainPlan") -> Table:
    m = plan.memory
    table = Table(title=f"training memory per GPU ({plan.accelerator.name})")
    table.add_column("part")
    table.add_column("bytes", justify="right")
    rows = [
        ("parameters", m.params),
        ("gradients", m.grads),
        ("AdamW states", m.optimizer),
        ("comm buffers", m.comm_buffers),
        ("bf16 weight copies", m.weight_copies),
        ("activations (after forward)", m.activations),
        ("backward live (acts+grads+loss)", m.backward_live),
        ("optimizer temporaries", m.optimizer_temp),
    ]
    for name, value in rows:
        table.add_row(name, _gib(value))
    for cat, value in m.params_by_category.items():
        if value:
            table.add_row(f"  params: {cat}", _gib(value))
    table.add_section()
    table.add_row("forward/backward phase", _gib(m.forward_backward))
    table.add_row("optimizer-step phase", _gib(m.optimizer_step))
    verdict = "[green]fits[/green]" if plan.fits else "[red]does not fit[/red]"
    table.add_row(
        "[bold]peak[/bold]", f"[bold]{_gib(m.peak)}[/bold] of {_gib(plan.capacity_bytes)}: {verdict}"
    )
    return table


def _summary_table(plan: "planning.TrainPlan", tokens: float) -> Table:
    s, shape = plan.setup, plan.model
    table = Table(title=f"plan: {shape.name}, {tokens:,.3g} tokens", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row(
        "params total / active", f"{shape.params_total / 1e9:,.3f}B / {shape.params_active / 1e9:,.3f}B"
    )
    table.add_row("GPUs used", f"{s.n_gpus} × {plan.accelerator.name}")
    ckpt = "on" if s.activation_checkpointing else "off"
    table.add_row("setup", f"ZeRO-{s.zero_stage}, {s.precision}, checkpointing {ckpt}, ep {s.ep_size}")
    table.add_row("micro-batch × seq_len × accum", f"{s.micro_batch} × {s.seq_len} × {s.grad_accum}")
    table.add_row("largest micro-batch that fits", str(plan.max_micro_batch))
    table.add_row(
        "fewest GPUs that fit (ZeRO-2)", str(plan.min_gpus) if plan.min_gpus else "none on this pool"
    )
    if plan.step is None:
        table.add_row("time", "unknown: no peak for this accelerator (calibrate on measured runs)")
        return table
    st, cost = plan.step, plan.cost
    table.add_row("FLOPs per token", f"{st.flops_per_token:,.4g}")
    table.add_row("compute / memory / comm", f"{st.compute_s:.3f} / {st.memory_s:.3f} / {st.comm_s:.3f} s")
    table.add_row("step time", f"{st.step_s:.3f} s ({st.bound}-bound, {st.tokens_per_step:,} tokens/step)")
    table.add_row("tokens/s", f"{st.tokens_per_s:,.0f}")
    table.add_row("wall time", _duration(cost.wall_s))
    table.add_row("GPU-hours", f"{cost.gpu_hours:,.1f}")
    if cost.dollars is not None:
        table.add_row("cost", f"${cost.dollars:,.0f}")
    return table


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def calibration_table(fitted) -> Table:
    """One row per hardware: fitted FLOP/s (MFU) and memory scale, median errors before → after."""
    table = Table(title="calibration on the finished train runs in MLflow")
    cols = ("hardware", "runs (time/mem)", "achieved FLOP/s", "MFU", "time err", "memory scale", "mem err")
    for col in cols:
        table.add_column(col, justify="left" if col == "hardware" else "right")
    for f in fitted.by_hardware.values():
        rate = "-" if f.flops_per_s is None else f"{f.flops_per_s / 1e9:,.2f} G"
        scale = "-" if f.memory_scale is None else f"{f.memory_scale:.3f}"
        table.add_row(
            f.hardware,
            f"{f.n_time_runs}/{f.n_memory_runs}",
            rate,
            _pct(f.mfu),
            f"{_pct(f.time_error_before)} → {_pct(f.time_error_after)}",
            scale,
            f"{_pct(f.memory_error_before)} → {_pct(f.memory_error_after)}",
        )
    return table


@clusters_app.command("calibrate")
def calibrate_cmd(
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI.")] = None,
) -> None:
    """Fit the capacity model to the finished train runs in MLflow; print the prediction errors."""
    from orchestrator import api  # here, not at the top: start-up latency (see cli/main.py)

    try:
        fitted = api.calibration(tracking_uri)
    except (ValueError, TrackingError) as err:
        raise bad_input(err) from None
    _console().print(calibration_table(fitted))


def _suite_table(plans: "list[planning.JobPlan]", width: int, wide: bool, cpu_only: bool = False) -> Table:
    """job and fits, then GPUs, peak, time and capacity while they fit the terminal. cpu_only: a cluster
    without GPUs (`local` on a CPU box), where each job's device is "cpu", not 1 GPU."""
    rows = []
    for p in plans:
        wall = _duration(p.wall_s) if p.wall_s is not None else (p.note or "-")
        sized = p.peak_bytes > 0 or p.capacity_bytes > 0
        peak, cap = (_gib(p.peak_bytes), _gib(p.capacity_bytes)) if sized else ("-", "-")
        gpus = "cpu" if cpu_only else str(p.n_gpus)
        rows.append(
            {
                "job": p.name,
                "GPUs": gpus,
                "peak": peak,
                "capacity": cap,
                "fits": "yes" if p.fits else "NO",
                "est. time": wall,
            }
        )
    df = pd.DataFrame(rows, columns=["job", "GPUs", "peak", "capacity", "fits", "est. time"])
    return render.fitted_table(
        df,
        "suite plan",
        ["job", "fits"],
        ["GPUs", "peak", "est. time", "capacity"],
        width,
        wide,
        {"fits": {"yes": "green", "NO": "red"}},
        right=("GPUs", "peak", "capacity", "est. time"),
    )


def plan(
    suite: Annotated[str | None, typer.Argument(help="A suite: plan each of its jobs.")] = None,
    cluster: Annotated[
        str | None, typer.Option(help="Cluster file or shipped example name (default: local).")
    ] = None,
    preset: Annotated[str | None, typer.Option(help="Model preset (without SUITE).")] = None,
    family: Annotated[str | None, typer.Option(help="dense | l3 | moe | scone.")] = None,
    tokens: Annotated[float | None, typer.Option(help="Tokens to train (e.g. 30e9).")] = None,
    micro_batch: Annotated[int | None, typer.Option(help="Sequences per GPU (default: largest ≤ 8).")] = None,
    seq_len: Annotated[int | None, typer.Option(help="Default: the preset's max_seq_len.")] = None,
    gpus: Annotated[int | None, typer.Option(help="GPUs (default: the cluster's GPU pool).")] = None,
    zero_stage: Annotated[
        int | None, typer.Option(help="0 (DDP), 1 or 2 (default: lowest that fits).")
    ] = None,
    precision: Annotated[str | None, typer.Option(help="fp32 | amp-bf16 | bf16-master.")] = None,
    checkpointing: Annotated[bool | None, typer.Option("--checkpointing/--no-checkpointing")] = None,
    mfu: Annotated[float | None, typer.Option(help="Assumed model FLOPs utilization.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Suite override KEY=VALUE.")] = None,
    calibrate: Annotated[
        bool | None, typer.Option("--calibrate", help="Fit time/memory factors to the runs in MLflow.")
    ] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow store for --calibrate.")] = None,
    wide: Annotated[bool | None, typer.Option("--wide", help="Every column.")] = None,
) -> None:
    """Will it fit, on how many GPUs, how long and how many GPU-hours: one preset, or every job of SUITE."""
    from orchestrator import api  # here, not at the top: start-up latency (see cli/main.py)
    from orchestrator.planning import plan as planning

    given = {
        "suite": suite,
        "sets": tuple(set_ or ()),
        "preset": preset,
        "family": family,
        "tokens": tokens,
        "micro_batch": micro_batch,
        "seq_len": seq_len,
        "n_gpus": gpus,
        "zero_stage": zero_stage,
        "activation_checkpointing": checkpointing,
        "precision": precision,
        "mfu": mfu,
    }
    request = planning.PlanRequest(**{k: v for k, v in given.items() if v is not None})  # its defaults
    try:
        outcome = api.plan(request, cluster, bool(calibrate), tracking_uri)
    except (ValueError, TrackingError) as err:
        raise bad_input(err) from None
    out = _console()
    if outcome.calibration is not None:
        out.print(calibration_table(outcome.calibration))
    if outcome.jobs is None:
        out.print(_memory_table(outcome.training))
        out.print(_summary_table(outcome.training, request.tokens))
        return
    table = _suite_table(outcome.jobs, out.width, bool(wide), not outcome.cluster.total_gpus)
    render.print_table(out, table, bool(wide))
    for p in outcome.jobs:  # the setup each train job was sized with, or what would fit
        if p.kind == "train" and p.note:
            out.print(f"{p.name}: {p.note}", markup=False, highlight=False)
    bad = planning.unfit_jobs(outcome.jobs)
    out.print(f"{len(outcome.jobs) - len(bad)} of {len(outcome.jobs)} jobs fit on {outcome.cluster.name}")
    raise typer.Exit(1 if bad else 0)

"""The GPU check's printed table: one section per check, plain text (no rich on the GPU image)."""

# Columns shown per section (JSON keeps every field); timing columns print "-" in a dry run.
COLUMNS = {
    "correctness": ["impl", "dtype", "tied", "max_rel_error", "tolerance", "ok", "repeatable"],
    "bandwidth": ["impl", "dtype", "phase", "median_s", "gb_per_s", "frac_of_peak"],
    "train_step": ["model", "median_step_s", "tokens_per_s", "vs_dense"],
    "decode": [
        "batch",
        "on_device_tokens_per_s",
        "offloaded_tokens_per_s",
        "offloaded_vs_on_device",
        "goal",
        "wait_us_per_l3_call",
    ],
    "host_syncs": ["model", "fwd_bwd", "optimizer", "how"],
}
TIMING_FIELDS = {
    "median_s", "gb_per_s", "frac_of_peak", "median_step_s", "p10_s", "p90_s", "tokens_per_s", "vs_dense",
    "on_device_tokens_per_s", "offloaded_tokens_per_s", "offloaded_vs_on_device", "wait_us_per_l3_call",
}  # fmt: skip


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return str(value)


def blank_timings(rows: list[dict]) -> list[dict]:
    """The rows with every timing field set to None (a dry run makes no timing claims)."""
    return [{k: (None if k in TIMING_FIELDS else v) for k, v in row.items()} for row in rows]


def table(name: str, rows: list[dict]) -> str:
    cols = COLUMNS[name]
    cells = [cols] + [[_cell(row.get(c)) for c in cols] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(cols))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render(result: dict) -> str:
    env = result["env"]
    head = [
        f"GPU check — {env['device_name']} ({env['catalog_entry'] or 'not in catalog'}), "
        f"torch {env['torch']}, triton {env['triton']}, dry run: {result['dry_run']}"
    ]
    if result["dry_run"]:
        head.append("dry run: tiny shapes on CPU, Triton under its interpreter; timings are not measured.")
    for note in result["notes"]:
        head.append(f"note: {note}")
    parts = ["\n".join(head)]
    for name in COLUMNS:
        section = result["sections"].get(name)
        if section is None:
            continue
        if "skipped" in section:
            parts.append(f"[{name}] skipped: {section['skipped']}")
        elif "error" in section:
            parts.append(f"[{name}] FAILED: {section['error']}")
        else:
            parts.append(f"[{name}] ({section['seconds']:.1f} s)\n{table(name, section['rows'])}")
    return "\n\n".join(parts)

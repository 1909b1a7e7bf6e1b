"""The report's page: its HTML (verdict, figures embedded as base64 PNG, detail tables folded) and its
Markdown (verdict, figure links, narrow tables inline and wide ones linked as CSV)."""

import base64
import html
import math
from pathlib import Path

import numpy as np
import pandas as pd

_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;font-size:12px;margin:0.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:right;white-space:nowrap}th{background:#f0f0f0}
td:first-child,th:first-child{text-align:left}.note{color:#555;font-style:italic}.error{color:#a33}
img{max-width:100%;border:1px solid #eee}.flag{background:#fde2e2}
.verdict{font-size:1.25em;font-weight:600}details{margin:0.4em 0}summary{cursor:pointer;font-weight:600}
table.narrow{font-size:14px}"""


def _fmt(value: object) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    if isinstance(value, float | np.floating):
        return f"{value:.4g}" if abs(value) < 1e6 else f"{value:.3e}"
    return str(value)


def _display(table: pd.DataFrame) -> pd.DataFrame:
    """Byte columns shown in GiB (renamed *_GiB); everything else as is."""
    out = table.copy()
    for col in [c for c in out.columns if str(c).endswith("_bytes")]:
        out[col] = out[col].astype("Float64") / 2**30
        out = out.rename(columns={col: str(col).removesuffix("_bytes") + "_GiB"})
    return out


def _cells(table: pd.DataFrame) -> list[list[str]]:
    return [[_fmt(v) for v in row] for row in _display(table).astype(object).itertuples(index=False)]


def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (no tabulate dependency); NA shows as —."""
    header = [str(c) for c in _display(table).columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in _cells(table)]
    return "\n".join(lines)


def _html_table(table: pd.DataFrame, cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in _display(table).columns)
    flags = (
        table["match_flag"].fillna(False).tolist() if "match_flag" in table.columns else [False] * len(table)
    )
    rows = []
    for cells, flag in zip(_cells(table), flags, strict=True):
        tds = "".join(f"<td>{html.escape(c)}</td>" for c in cells)
        rows.append(f'<tr class="flag">{tds}</tr>' if flag else f"<tr>{tds}</tr>")
    attr = f" class='{cls}'" if cls else ""
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _rel(path: Path, out_dir: Path) -> str:
    return path.relative_to(out_dir).as_posix()


def render_html(heading, subtitle, verdict, sections, figures, csvs, out_dir: Path) -> str:
    """The page: verdict (lines, narrow table, note), figures [(title, png or None, note)], then each
    section (title, table, note, problem) folded with its CSV path (csvs: title -> path)."""
    parts = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(heading)}</title>",
        f"<style>{_CSS}</style></head><body><h1>{html.escape(heading)}</h1><p>{html.escape(subtitle)}</p>",
        "<h2>Verdict</h2>",
    ]
    parts += [f"<p class='verdict'>{html.escape(line)}</p>" for line in verdict.lines]
    if verdict.table is not None:
        parts.append(_html_table(verdict.table, "narrow"))
    parts.append(f"<p class='note'>{html.escape(verdict.note)}</p>")
    parts.append("<h2>Figures</h2>")
    for title, path, note in figures:
        parts.append(f"<h3>{html.escape(title)}</h3>")
        if path is None:
            parts.append(f"<p class='note'>not drawn: {html.escape(note)}</p>")  # no data: not an error
            continue
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        parts.append(f"<img alt='{html.escape(title)}' src='data:image/png;base64,{data}'>")
    parts.append("<h2>Details</h2>")
    for s in sections:
        note = f"<p class='{'error' if s.problem else 'note'}'>{html.escape(s.note)}</p>" if s.note else ""
        if s.table is None:
            parts.append(f"<h3>{html.escape(s.title)}</h3>{note}")
            continue
        csv = html.escape(_rel(csvs[s.title], out_dir))
        summary = f"{html.escape(s.title)} <span class='note'>({len(s.table)} rows; CSV: {csv})</span>"
        opened = " open" if s.problem else ""  # something went wrong: shown, not folded
        parts.append(
            f"<details{opened}><summary>{summary}</summary>{note}"
            f"<div class='scroll'>{_html_table(s.table)}</div></details>"
        )
    parts.append("</body></html>")
    return "\n".join(parts)


MARKDOWN_MAX_COLUMNS = 10  # wider tables are linked as CSV, not inlined


def render_markdown(heading, subtitle, verdict, sections, figures, csvs, out_dir: Path) -> str:
    """The same content as `render_html` in Markdown; tables wider than MARKDOWN_MAX_COLUMNS are linked."""
    parts = [f"# {heading}", "", subtitle, "", "## Verdict", ""]
    parts += [f"**{line}**\n" for line in verdict.lines]
    if verdict.table is not None:
        parts += [to_markdown(verdict.table), ""]
    parts += [f"_{verdict.note}_", "", "## Figures", ""]
    parts += [] if figures else ["_none drawn (tables-only report)_", ""]
    for title, path, note in figures:
        rel = None if path is None else _rel(path, out_dir)
        parts += [f"![{title}]({rel})" if rel else f"_{title}: not drawn: {note}_", ""]
    parts += ["## Details", ""]
    for s in sections:
        parts += [f"### {s.title}", ""]
        if s.note:
            parts += [f"_{s.note}_", ""]
        if s.table is not None and len(s.table.columns) <= MARKDOWN_MAX_COLUMNS:
            parts += [to_markdown(s.table), ""]
        elif s.table is not None:
            csv = _rel(csvs[s.title], out_dir)
            parts += [f"{len(s.table)} rows × {len(s.table.columns)} columns: [{csv}]({csv})", ""]
    return "\n".join(parts)

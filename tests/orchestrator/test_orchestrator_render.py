"""What people read: `compare` fits 80 columns without cutting a cell, `--wide` shows every column, the
errors of jobs that did not finish follow the table; piped progress shows life."""

import io
import re

import pandas as pd
import pytest
from rich.console import Console

from orchestrator import render

ROWS = [  # api.compare's frame for the quickstart suite (numbers of a captured `make demo`), one job failed
    ("train", "dense", "tiny",
     6.52e6, 8.62e6, 1.321, 0.0, 6.494, 661.0, 780.0, 941.0, None, None, "finished"),
    ("infer", "dense", "tiny",
     6.52e6, 8.62e6, 1.321, 0.0, None, None, 413.0, 526.0, None, None, "finished"),
    ("train", "l3", "tiny",
     6.62e6, 33.79e6, 5.102, 2e-4, 6.005, 405.0, 603.0, 1314.0, None, 129.0, "finished"),
    ("infer", "l3", "tiny",
     6.62e6, 33.79e6, 5.102, 2e-4, None, None, 288.0, 574.0, None, None, "finished"),
    ("train", "moe", "tiny",
     6.47e6, 34.01e6, 5.253, -0.0078, None, None, None, None, None, None, "oom"),
    ("infer", "moe", "tiny",
     6.47e6, 34.01e6, 5.253, -0.0078, None, None, 123.0, 653.0, 2.217, None, "finished"),
]  # fmt: skip
COLUMNS = ["job", "family", "preset", "active", "total", "sparsity", "match_err", "val_loss", "val_ppl",
           "tokens_per_s", "peak_mem_mib", "moe_max/mean", "l3_rows/tok", "status"]  # fmt: skip
ERROR = "RuntimeError: [enforce fail at alloc_cpu.cpp:121] DefaultCPUAllocator: can't allocate memory"


def frame() -> pd.DataFrame:
    df = pd.DataFrame(ROWS, columns=COLUMNS)
    df["error"] = [None, None, None, None, ERROR, None]
    return df


def shown(width: int, wide: bool = False) -> str:
    out = Console(width=width, file=io.StringIO(), force_terminal=False, color_system=None)
    render.print_compare(out, frame(), wide)
    return out.file.getvalue()


@pytest.mark.parametrize("width", [80, 120])
def test_default_compare_fits_without_cutting_a_cell(width):
    text = shown(width)
    lines = text.splitlines()
    assert "…" not in text and max(len(line) for line in lines) <= width
    for kind, family in (("train", "dense"), ("infer", "l3"), ("train", "moe")):
        assert f"{kind} {family} tiny" in text, text
    assert re.search(r"train l3 tiny\s+6\.62M\s+33\.79M\s+.*6\.005\s+.*603\s+1,314\s+.*finished", text), text
    assert re.search(r"train moe tiny\s+6\.47M\s+34\.01M\s+.*oom", text), text
    assert "train moe tiny: RuntimeError: [enforce fail" in text  # the error follows the table
    assert "DefaultCPUAllocator: can't allocate memory" in " ".join(text.split())


def test_wider_terminals_get_more_columns():
    narrow, wider = shown(80), shown(120)
    assert "match err" not in narrow and "match err" in wider and "val ppl" in wider
    row = r"train l3 tiny\s+6\.62M\s+33\.79M\s+6\.005\s+603\s+1,314\s+5\.102\s+0\.0002\s+405\s.*finished"
    assert re.search(row, wider), wider


def test_wide_compare_shows_every_column_and_the_error():
    text = shown(240, wide=True)
    for column in ("sparsity", "match_err", "val_ppl", "moe_max/mean", "l3_rows/tok", "error"):
        assert column in text
    assert ERROR in text and "…" not in text

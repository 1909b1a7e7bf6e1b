"""Speeds measured under contention: marked "~" in the report's tables with a footnote, decode ratios vs dense
preferring the interleaved ones, and a summary that states clean ratios only (hand-worked values)."""

import pandas as pd

from results import contention, names, report, schema

DECODE1 = names.batch_size_key(names.INFER_DECODE_TOKENS_PER_S, 1)
VS_DENSE1 = names.batch_size_key(names.INFER_VS_DENSE_DECODE, 1)
P10, P90 = (
    names.batch_size_key(k, 1) for k in (names.INFER_VS_DENSE_DECODE_P10, names.INFER_VS_DENSE_DECODE_P90)
)


def runs(rows: list[dict]) -> pd.DataFrame:
    base = {"status": "FINISHED", "preset": "tiny", "variant": "base", "hardware": "cpu", "seed": 0}
    return schema.coerce(pd.DataFrame([base | {"run_id": f"r{i}"} | r for i, r in enumerate(rows)]))


def infer(family: str, decode: float, contended: float | None, group: str = "tiny/base", **extra) -> dict:
    row = {"kind": "infer", "family": family, "group": group, DECODE1: decode}
    if contended is not None:
        row[names.TIMING_CONTENDED] = contended
    return row | extra


def test_a_run_without_a_contention_record_counts_as_contended():
    table = runs([infer("dense", 100.0, 0.0), infer("l3", 80.0, None), infer("moe", 20.0, 1.0)])
    assert contention.run_contended(table).tolist() == [False, True, True]
    no_column = runs([infer("dense", 100.0, None)])
    assert contention.run_contended(no_column).tolist() == [True]


def test_ratios_prefer_the_interleaved_ones_and_mark_contended_sides():
    table = runs([
        infer("dense", 100.0, 0.0),
        infer("l3", 80.0, 0.0, **{VS_DENSE1: 0.88, P10: 0.86, P90: 0.9}),  # interleaved: 0.88, not 0.80
        infer("moe", 20.0, 0.0),  # separate jobs: 20 / 100
        infer("dense", 50.0, 1.0, group="small/base"), infer("l3", 40.0, 0.0, group="small/base"),
    ])  # fmt: skip
    ratios = contention.decode_ratios(table).set_index(["group", "family"])
    assert ratios.loc[("tiny/base", "l3"), "decode_vs_dense"] == 0.88
    assert ratios.loc[("tiny/base", "l3"), "source"] == contention.INTERLEAVED
    assert ratios.loc[("tiny/base", "moe"), "decode_vs_dense"] == 0.2
    assert ratios.loc[("tiny/base", "moe"), "source"] == contention.SEPARATE
    assert ratios.loc[("tiny/base", "l3"), ["p10", "p90"]].tolist() == [0.86, 0.9]  # its spread over rounds
    assert ratios.loc[("tiny/base", "moe"), ["p10", "p90"]].isna().all()  # two runs: no rounds
    assert ratios.loc[("small/base", "l3"), "decode_vs_dense"] == 0.8
    assert ratios["contended"].tolist() == [False, False, True]  # small's dense was contended
    summary = contention.ratio_summary(ratios.reset_index())
    assert (
        summary == "bs1: l3 0.88× dense, moe 0.20× dense (1 ratio(s) measured under contention: not stated)"
    )


def test_speed_cells_of_contended_configs_are_marked():
    table = pd.DataFrame({
        "group": ["g", "g", "g"], "family": ["dense", "l3", "moe"], "preset": ["tiny"] * 3,
        "variant": ["base"] * 3, "tokens_per_s": [1000.0, 800.0, 600.0],
        "tokens_per_s_ratio": [1.0, 0.8, 0.6], "val_loss": [6.5, 6.0, 6.6],
    })  # fmt: skip
    flags = table[contention.KEYS].assign(contended=[False, False, True])
    marked = contention.mark(table, flags, ["tokens_per_s", "tokens_per_s_ratio"], ("tokens_per_s_ratio",))
    assert marked["tokens_per_s"].tolist() == ["1000", "800", "~600"]
    assert marked["tokens_per_s_ratio"].tolist() == ["1", "0.8", "~0.6"]
    assert marked["val_loss"].tolist() == [6.5, 6.0, 6.6]  # quality is never marked
    dense_loaded = flags.assign(contended=[True, False, False])
    marked = contention.mark(
        table, dense_loaded, ["tokens_per_s", "tokens_per_s_ratio"], ("tokens_per_s_ratio",)
    )
    assert marked["tokens_per_s"].tolist() == ["~1000", "800", "600"]
    assert marked["tokens_per_s_ratio"].tolist() == ["~1", "~0.8", "~0.6"]  # every ratio to that dense


def test_the_report_marks_contended_speeds_and_says_so(tmp_path):
    table = runs([
        infer("dense", 100.0, 1.0), infer("l3", 80.0, 1.0, **{VS_DENSE1: 0.88}),
        {"kind": "train", "family": "dense", "group": "tiny/base", names.TRAIN_TOKENS_PER_S: 1844.0,
         names.EVAL_VAL_LOSS: 6.5, names.TIMING_CONTENDED: 1.0, "params_active": 10, "params_total": 10},
    ])  # fmt: skip
    paths = report.build_report(table, out_dir=tmp_path, figures=False)
    text = paths.html.read_text()  # every table (Markdown links the wide ones' CSV files)
    assert "~1844" in text and "~0.880" in text and "~100" in text
    assert contention.FOOTNOTE in text
    assert "none measured alone (1 ratio(s) measured under contention: not stated)" in text


def test_a_report_of_clean_runs_has_no_marks(tmp_path):
    table = runs([infer("dense", 100.0, 0.0), infer("l3", 80.0, 0.0, **{VS_DENSE1: 0.88})])
    text = report.build_report(table, out_dir=tmp_path, figures=False).html.read_text()
    assert "~" not in text and contention.FOOTNOTE not in text
    assert "bs1: l3 0.88× dense" in text and contention.INTERLEAVED in text

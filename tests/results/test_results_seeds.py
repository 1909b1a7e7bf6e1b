"""Seed statistics against hand-worked values: mean ± sd, paired differences and their 95% t intervals."""

import math

import pandas as pd
import pytest

from results import names, schema, seeds

# For 2 degrees of freedom the t quantile has a closed form: t_p = (2p − 1) / sqrt(2p(1 − p)).
T975_2 = 0.95 / math.sqrt(2 * 0.975 * 0.025)  # 4.302652...
# val loss per family and seed; differences vs dense: l3 −0.06/−0.07/−0.08, scone +0.01/−0.03/−0.01,
# moe +0.20/+0.25/+0.30.
LOSS = {
    "dense": {0: 4.20, 1: 4.21, 2: 4.24},
    "l3": {0: 4.14, 1: 4.14, 2: 4.16},
    "scone": {0: 4.21, 1: 4.18, 2: 4.23},
    "moe": {0: 4.40, 1: 4.46, 2: 4.54},
}


def _runs(loss=LOSS, group="tiny/base", preset="tiny", variant="base", status="FINISHED") -> pd.DataFrame:
    rows = [
        {"run_id": f"{preset}-{variant}-{fam}-{seed}", "status": status, "kind": "train", "family": fam,
         "preset": preset, "variant": variant, "group": group, "seed": seed, "hardware": "cpu",
         names.EVAL_VAL_LOSS: value}
        for fam, by_seed in loss.items() for seed, value in by_seed.items()
    ]  # fmt: skip
    return schema.coerce(pd.DataFrame(rows))


def _row(table: pd.DataFrame, family: str) -> pd.Series:
    return table[table["family"].eq(family)].iloc[0]


def test_t_interval_hand_worked():
    mean, low, high = seeds.t_interval([-0.06, -0.07, -0.08])
    half = T975_2 * 0.01 / math.sqrt(3)
    assert mean == pytest.approx(-0.07)
    assert (low, high) == pytest.approx((-0.07 - half, -0.07 + half))
    assert half == pytest.approx(0.0248414, abs=1e-6)


def test_t_interval_degenerate_and_bad_level():
    assert math.isnan(seeds.t_interval([0.3])[1])
    assert seeds.t_interval([0.3])[0] == pytest.approx(0.3)
    assert all(math.isnan(v) for v in seeds.t_interval([]))
    assert seeds.t_interval([0.1, 0.1]) == pytest.approx((0.1, 0.1, 0.1))  # no spread: a point interval
    with pytest.raises(ValueError, match="level"):
        seeds.t_interval([1.0, 2.0], level=1.0)


def test_paired_table_hand_worked():
    table = seeds.paired_table(_runs().sample(frac=1, random_state=3))  # row order must not matter
    dense, l3, scone, moe = (_row(table, f) for f in ("dense", "l3", "scone", "moe"))
    assert dense["mean"] == pytest.approx(12.65 / 3)
    assert dense["std"] == pytest.approx(math.sqrt(((4.20 - 4.2166667) ** 2 + (4.21 - 4.2166667) ** 2
                                                    + (4.24 - 4.2166667) ** 2) / 2), abs=1e-6)  # fmt: skip
    assert pd.isna(dense["diff_mean"]) and pd.isna(dense["within_noise"]) and dense["n_pairs"] == 0
    half = T975_2 * 0.01 / math.sqrt(3)
    assert (l3["n_pairs"], l3["diff_mean"], l3["diff_std"]) == (3, pytest.approx(-0.07), pytest.approx(0.01))
    assert (l3["ci_low"], l3["ci_high"]) == pytest.approx((-0.07 - half, -0.07 + half))
    assert not l3["within_noise"]
    assert scone["diff_mean"] == pytest.approx(-0.01) and scone["diff_std"] == pytest.approx(0.02)
    assert scone["ci_low"] == pytest.approx(-0.01 - 2 * half) and bool(scone["within_noise"])
    assert moe["diff_mean"] == pytest.approx(0.25) and not moe["within_noise"]
    assert list(table["label"]) == ["dense", "L3", "MoE", "SCONE"]


def test_pairs_are_by_seed_not_position():
    """L3 misses seed 1: the pairs are seeds 0 and 2 (−0.06, −0.08), not the first two of each side."""
    loss = {"dense": LOSS["dense"], "l3": {0: 4.14, 2: 4.16}}
    l3 = _row(seeds.paired_table(_runs(loss)), "l3")
    assert (l3["n_pairs"], l3["diff_mean"]) == (2, pytest.approx(-0.07))
    assert l3["diff_std"] == pytest.approx(0.02 / math.sqrt(2))


def test_verdict_orders_by_mean_and_names_the_noise():
    table = seeds.paired_table(_runs())
    assert seeds.verdict(table) == ["L3 < SCONE < dense < MoE (SCONE vs dense within noise)"]


def test_verdict_one_seed_says_no_interval():
    one = {fam: {0: by_seed[0]} for fam, by_seed in LOSS.items()}
    table = seeds.paired_table(_runs(one))
    assert seeds.verdict(table) == ["L3 < dense < SCONE < MoE (1 seed: no intervals)"]
    assert table["within_noise"].isna().all()


def test_variants_reuse_the_presets_dense_and_get_labels():
    """The orchestrator runs an unchanged dense job once: a variant group without one pairs with the
    preset's only dense config, and a family with several configs is labelled by variant."""
    base = _runs({"dense": LOSS["dense"], "l3": LOSS["l3"]})
    cap1 = _runs({"l3": {0: 4.15, 1: 4.16, 2: 4.19}}, group="tiny/cap1", variant="cap1")
    table = seeds.paired_table(pd.concat([base, cap1], ignore_index=True))
    row = table[table["variant"].eq("cap1")].iloc[0]
    assert row["dense_group"] == "tiny/base" and row["diff_mean"] == pytest.approx(-0.05)
    assert set(table["label"]) == {"dense", "L3 base", "L3 cap1"}
    assert seeds.verdict(table) == ["L3 base < L3 cap1 < dense"]


def test_unfinished_runs_and_other_kinds_do_not_count():
    runs = pd.concat([_runs(), _runs({"l3": {3: 9.0}}, status="FAILED")], ignore_index=True)
    table = seeds.paired_table(runs)
    assert _row(table, "l3")["n_seeds"] == 3 and _row(table, "l3")["mean"] == pytest.approx(12.44 / 3)
    assert seeds.paired_table(runs, kind="infer").empty


def test_one_line_per_preset_when_several():
    runs = pd.concat([_runs(), _runs(group="small/base", preset="small")], ignore_index=True)
    lines = seeds.verdict(seeds.paired_table(runs))
    verdict = "L3 < SCONE < dense < MoE (SCONE vs dense within noise)"
    assert sorted(lines) == [f"small cpu: {verdict}", f"tiny cpu: {verdict}"]


def test_display_is_narrow_and_readable():
    shown = seeds.display(seeds.paired_table(_runs()))
    l3 = shown[shown["config"].eq("L3")].iloc[0]
    assert l3["val loss"] == "4.147 ± 0.012"
    assert (l3["Δ vs dense"], l3["95% interval"], l3["gap"]) == ("-0.070", "[-0.095, -0.045]", "real")
    assert shown[shown["config"].eq("SCONE")].iloc[0]["gap"] == "within noise"
    assert shown[shown["config"].eq("dense")].iloc[0]["95% interval"] == "—"


def test_narrow_puts_bits_per_byte_beside_the_loss():
    runs = _runs()
    runs[names.EVAL_VAL_BPB] = runs[names.EVAL_VAL_LOSS] / 4.0  # one tokenizer: bpb is loss over a constant
    runs.loc[runs["family"].eq("moe") & runs["seed"].eq(2), names.EVAL_VAL_BPB] = 1.0
    shown = seeds.narrow(runs, seeds.paired_table(runs), names.EVAL_VAL_LOSS)
    assert list(shown.columns)[:5] == ["config", "seeds", "val loss", "val bpb", "Δ vs dense"]
    by = shown.set_index("config")["val bpb"]
    assert (by["dense"], by["L3"], by["MoE"]) == ("1.054", "1.037", "1.072")  # 12.65/12, 12.44/12, 3.215/3
    without = seeds.narrow(_runs(), seeds.paired_table(_runs()), names.EVAL_VAL_LOSS)
    assert "val bpb" not in without.columns  # nothing recorded: no empty column
    bpb_only = seeds.narrow(runs, seeds.paired_table(runs, names.EVAL_VAL_BPB), names.EVAL_VAL_BPB)
    assert list(bpb_only.columns)[2:4] == ["val bpb", "Δ vs dense"]  # bpb is the metric: not twice


def test_quality_reads_bits_per_byte_when_tokenizers_mix():
    runs = _runs()
    assert seeds.quality(runs) == (names.EVAL_VAL_LOSS, "val loss")
    bpt = runs["family"].map({"dense": 4.0, "l3": 5.0, "scone": 4.0, "moe": 4.0}).astype(float)
    mixed = runs.assign(**{names.DATA_VAL_BYTES_PER_TOKEN: bpt, names.EVAL_VAL_BPB: 1.0})
    assert seeds.quality(mixed) == (names.EVAL_VAL_BPB, "val bpb")
    assert seeds.display(seeds.paired_table(mixed, names.EVAL_VAL_BPB), "val bpb").columns[2] == "val bpb"


def test_gain_kept_says_what_each_control_keeps_of_l3s_gain():
    base = _runs(LOSS)  # L3 gain: −0.07; MoE +0.25 (worse than dense, interval [+0.13, +0.37])
    cap1 = _runs({"l3": {0: 4.15, 1: 4.16, 2: 4.19}}, group="tiny/cap1", variant="cap1")  # −0.05
    lines = seeds.gain_kept(seeds.paired_table(pd.concat([base, cap1], ignore_index=True)))
    assert lines == [
        "MoE keeps none of L3 base's gain over dense (it is worse than dense)",
        "SCONE keeps 14% of L3 base's gain over dense (its gap to dense is within noise)",
        "L3 cap1 keeps 71% of L3 base's gain over dense",
    ]
    assert seeds.gain_kept(seeds.paired_table(_runs({"dense": LOSS["dense"], "moe": LOSS["moe"]}))) == []


def test_a_suite_without_dense_pairs_with_its_first_config():
    """suites/l3-optimizers.yaml's shape: two L3 variants, no dense. Row-wise − AdamW per seed: +0.06,
    +0.08, +0.07 → mean +0.07, sd 0.01, the t interval of test_t_interval_hand_worked mirrored."""
    adamw = _runs({"l3": {0: 6.00, 1: 6.02, 2: 6.04}}, group="tiny/adamw", variant="adamw")
    rowwise = _runs({"l3": {0: 6.06, 1: 6.10, 2: 6.11}}, group="tiny/rowwise", variant="rowwise")
    table = seeds.paired_table(pd.concat([adamw, rowwise], ignore_index=True))
    first, second = table.iloc[0], table.iloc[1]
    assert (first["label"], first["n_pairs"], second["reference"]) == ("L3 adamw", 0, "L3 adamw")
    half = T975_2 * 0.01 / math.sqrt(3)
    assert (second["n_pairs"], second["diff_mean"]) == (3, pytest.approx(0.07))
    assert (second["ci_low"], second["ci_high"]) == pytest.approx((0.07 - half, 0.07 + half))
    assert seeds.verdict(table) == ["L3 adamw < L3 rowwise"]  # 3 seeds: no "1 seed" note
    shown = seeds.display(table).set_index("config")
    assert shown.loc["L3 rowwise", "Δ vs L3 adamw"] == "+0.070" and shown.loc["L3 rowwise", "gap"] == "real"
    assert seeds.gain_kept(table) == []  # no dense: no "gain over dense" to keep


def test_one_seed_and_no_common_seed_say_why_there_is_no_interval():
    one = _runs({"dense": {0: 4.2}, "l3": {0: 4.1}})
    assert seeds.verdict(seeds.paired_table(one)) == ["L3 < dense (1 seed: no intervals)"]
    apart = _runs({"dense": {0: 4.2, 1: 4.3}, "l3": {2: 4.1, 3: 4.0}})
    assert seeds.verdict(seeds.paired_table(apart)) == [
        "L3 < dense (fewer than 2 paired seeds: no intervals)"
    ]

"""results.analysis / results.fits on hand-built run tables with known answers."""

import math

import numpy as np
import pandas as pd
import pytest

from results import analysis, names, schema
from results.fits import fit_power_law

LOSS, PPL, TOK = names.EVAL_VAL_LOSS, names.EVAL_VAL_PPL, names.TRAIN_TOKENS_PER_S


def run(run_id, family, *, group="g", seed=0, active=1000, total=None, status="FINISHED", **metrics) -> dict:
    row = {
        "run_id": run_id,
        "status": status,
        "family": family,
        "preset": "p",
        "group": group,
        "seed": seed,
        "kind": "train",
        "hardware": "cpu",
        "params_active": active,
        "params_total": total or active,
    }
    extra = {k: v for k, v in metrics.items() if k in schema.IDENTITY}
    return row | extra | {names_key(k): v for k, v in metrics.items() if k not in schema.IDENTITY}


def names_key(short: str) -> str:
    return {"loss": LOSS, "ppl": PPL, "tok": TOK, "peak": names.MEM_PEAK_DEVICE_BYTES}.get(short, short)


def table(*rows) -> pd.DataFrame:
    return schema.coerce(pd.DataFrame(list(rows)))


def test_seed_mean_and_std_only_over_finished_runs():
    runs = table(
        run("a0", "l3", seed=0, loss=3.0),
        run("a1", "l3", seed=1, loss=3.2),
        run("a2", "l3", seed=2, loss=3.7),
        run("bad", "l3", seed=3, loss=100.0, status="FAILED"),
        run("d0", "dense", loss=4.0),
    )
    s = analysis.seed_summary(runs).set_index("family")
    assert s.loc["l3", "n_seeds"] == 3
    assert s.loc["l3", LOSS] == pytest.approx(3.3)
    assert s.loc["l3", f"{LOSS}_std"] == pytest.approx(np.std([3.0, 3.2, 3.7], ddof=1))
    assert s.loc["dense", "n_seeds"] == 1 and pd.isna(s.loc["dense", f"{LOSS}_std"])  # one seed: no std
    assert list(s.index) == ["dense", "l3"]


def test_iso_sparse_deltas_and_ratios_vs_dense():
    runs = table(
        run("d0", "dense", seed=0, loss=3.0, ppl=20.0, tok=1000.0, peak=100.0),
        run("d1", "dense", seed=1, loss=3.2, ppl=24.0, tok=1200.0, peak=100.0),
        run("l", "l3", total=4000, loss=2.9, ppl=18.0, tok=990.0, peak=250.0, match_error=0.01),
        run("m", "moe", total=4000, loss=3.0, ppl=19.0, tok=550.0, peak=300.0, match_error=-0.005),
        run("d_other", "dense", group="h", loss=9.0, tok=1.0),  # another group: must not be the reference
    )
    t = analysis.iso_sparse_table(runs).set_index(["group", "family"])
    dense_loss, dense_ppl, dense_tok = 3.1, 22.0, 1100.0
    assert t.loc[("g", "l3"), "delta_val_loss"] == pytest.approx(2.9 - dense_loss)
    assert t.loc[("g", "moe"), "delta_val_ppl"] == pytest.approx(19.0 - dense_ppl)
    assert t.loc[("g", "l3"), "tokens_per_s_ratio"] == pytest.approx(990.0 / dense_tok)
    assert t.loc[("g", "moe"), "tokens_per_s_ratio"] == pytest.approx(0.5)
    assert t.loc[("g", "moe"), "peak_device_ratio"] == pytest.approx(3.0)
    assert t.loc[("g", "dense"), "delta_val_loss"] == 0 and t.loc[("g", "dense"), "tokens_per_s_ratio"] == 1
    assert t.loc[("g", "l3"), "sparsity"] == pytest.approx(4.0)
    assert t.loc[("h", "dense"), "delta_val_loss"] == 0
    assert not t["match_flag"].any()


def test_bits_per_byte_and_the_quality_column_of_mixed_tokenizers():
    bpb, bpt = names.EVAL_VAL_BPB, names.DATA_VAL_BYTES_PER_TOKEN
    ln2 = math.log(2)
    # one corpus, two tokenizers: dense at 4 bytes/token, L3 with a larger vocabulary at 5 bytes/token.
    # Per token L3 looks worse (3.2 > 3.0 nats) but per byte it is better: 3.2/(5 ln2) < 3.0/(4 ln2).
    dense = run("d", "dense", loss=3.0, **{bpb: 3.0 / (4 * ln2), bpt: 4.0})
    l3 = run("l", "l3", loss=3.2, **{bpb: 3.2 / (5 * ln2), bpt: 5.0})
    t = analysis.iso_sparse_table(table(dense, l3)).set_index("family")
    assert t.loc["l3", "delta_val_loss"] == pytest.approx(0.2)
    assert (
        t.loc["l3", "delta_val_bpb"] == pytest.approx((3.2 / 5 - 3.0 / 4) / ln2)
        and t.loc["l3", "delta_val_bpb"] < 0
    )
    assert (
        analysis.mixes_tokenizers(table(dense, l3)) and analysis.quality_column(table(dense, l3)) == "val_bpb"
    )
    same = run("l", "l3", loss=2.9, **{bpb: 2.9 / (4 * ln2), bpt: 4.0})
    assert (
        not analysis.mixes_tokenizers(table(dense, same))
        and analysis.quality_column(table(dense, same)) == "val_loss"
    )
    failed = run("f", "l3", status="FAILED", loss=9.0, **{bpt: 7.0})  # only finished runs count
    assert not analysis.mixes_tokenizers(table(dense, same, failed))
    assert not analysis.mixes_tokenizers(table(run("o", "dense", loss=3.0)))  # older runs: no ratio logged


def test_iso_sparse_without_dense_gives_na_deltas_and_several_dense_raise():
    t = analysis.iso_sparse_table(table(run("l", "l3", loss=2.0)))
    assert pd.isna(t.loc[0, "delta_val_loss"]) and pd.isna(t.loc[0, "active_error"])
    two_dense = table(run("d", "dense", loss=3.0), run("d2", "dense", loss=3.0, variant="wide"))
    with pytest.raises(ValueError, match=r"\['g'\] have several dense configs"):
        analysis.iso_sparse_table(two_dense)


def test_group_without_dense_uses_the_only_dense_of_its_preset():
    runs = table(
        run("d", "dense", group="p/base", loss=3.0, tok=100.0),
        run("l", "l3", group="p/base", loss=2.8, tok=90.0),
        run("cap", "l3", group="p/cap64", loss=2.9, tok=95.0, variant="cap64"),
        run("d_q", "dense", group="q/base", preset="q", loss=5.0),  # another preset: not a reference of p
    )
    t = analysis.iso_sparse_table(runs).set_index("group")
    assert t.loc["p/cap64", "dense_group"] == "p/base"
    assert t.loc["p/cap64", "delta_val_loss"] == pytest.approx(-0.1)
    assert t.loc["p/cap64", "tokens_per_s_ratio"] == pytest.approx(0.95)
    two = table(*[run(f"d{v}", "dense", group=f"p/{v}", variant=v, loss=1.0) for v in "ab"],
                run("l", "l3", group="p/c", loss=2.0))  # fmt: skip
    assert pd.isna(
        analysis.iso_sparse_table(two).set_index("group").loc["p/c", "delta_val_loss"]
    )  # ambiguous


def test_match_flag_from_tag_or_measured_active_mismatch():
    runs = table(
        run("d", "dense", group="g", active=1000, loss=3.0),
        run("ok", "l3", group="g", active=1019, loss=3.0, match_error=0.019),  # 1.9%: fine
        run("tag", "moe", group="g", active=1000, loss=3.0, match_error=-0.021),  # recorded 2.1%: flagged
        run("d2", "dense", group="h", active=1000, loss=3.0),
        run("measured", "l3", group="h", active=1030, loss=3.0),  # 3% more active than dense, no tag
    )
    t = analysis.iso_sparse_table(runs).set_index(["group", "family"])
    flags = {f"{g}/{f}": bool(v) for (g, f), v in t["match_flag"].items()}
    assert flags == {"g/dense": False, "g/l3": False, "g/moe": True, "h/dense": False, "h/l3": True}
    assert t.loc[("h", "l3"), "active_error"] == pytest.approx(0.03)
    with pytest.raises(ValueError, match="tolerance"):
        analysis.iso_sparse_table(runs, tolerance=0)


def test_l3_vs_moe_at_equal_total():
    runs = table(
        run("l", "l3", active=1000, total=8000, loss=2.8, tok=900.0, peak=200.0),
        run("m", "moe", active=1000, total=8300, loss=3.0, tok=600.0, peak=250.0, moe_top_k=2),
        run("l_alone", "l3", group="h", loss=1.0),  # no MoE in its group: no pair
    )
    t = analysis.l3_vs_moe_table(runs)
    assert len(t) == 1
    row = t.iloc[0]
    assert row["total_error"] == pytest.approx(8300 / 8000 - 1)  # MoE vs its L3 model, +3.75%: flagged
    assert row["delta_val_loss"] == pytest.approx(-0.2)
    assert row["tokens_per_s_ratio"] == pytest.approx(1.5)
    assert row["peak_device_ratio"] == pytest.approx(0.8)
    assert row["moe_top_k"] == 2 and bool(row["match_flag"])


@pytest.mark.parametrize("b", [0.07, 0.3])
def test_scaling_fits_recover_known_exponents(b):
    sizes = [1e6, 4e6, 1.6e7, 6.4e7, 2.56e8]
    rows = []
    for i, n in enumerate(sizes):
        rows.append(run(f"d{i}", "dense", group=f"g{i}", active=int(n), loss=30.0 * n**-b + 1.7))
        rows.append(run(f"l{i}", "l3", group=f"g{i}", active=int(n), total=int(4 * n), loss=12.0 * n**-b))
    rows.append(run("abl", "l3", group="g0", active=int(sizes[0]), loss=99.0, variant="cap=64"))  # own curve
    all_fits = analysis.scaling_fits(table(*rows))
    ablation = all_fits[all_fits["variant"].eq("cap=64").fillna(False)]
    assert ablation["n_points"].tolist() == [1, 1] and ablation["b"].isna().all()  # 1 size: explicit, no fit
    fits = all_fits[all_fits["variant"].isna()].set_index(["family", "model"])
    assert fits.loc[("dense", "offset"), "b"] == pytest.approx(b, rel=1e-3)
    assert fits.loc[("dense", "offset"), "c"] == pytest.approx(1.7, rel=1e-3)
    assert fits.loc[("dense", "offset"), "r2"] == pytest.approx(1.0, abs=1e-9)
    assert fits.loc[("l3", "loglog"), "b"] == pytest.approx(b, rel=1e-9)
    assert fits.loc[("l3", "loglog"), "a"] == pytest.approx(12.0, rel=1e-6)
    assert fits.loc[("l3", "loglog"), "n_points"] == 5
    # vs total params the exponent is the same (total = 4 * active) and a absorbs 4^b
    total = analysis.scaling_fits(table(*rows), x="params_total")
    total = total[total["variant"].isna()].set_index(["family", "model"])
    assert total.loc[("l3", "loglog"), "a"] == pytest.approx(12.0 * 4**b, rel=1e-6)


def test_scaling_fits_with_too_few_sizes_are_explicit_rows():
    fits = analysis.scaling_fits(
        table(
            run("a", "moe", group="a", active=10, loss=3.0), run("b", "moe", group="b", active=20, loss=2.5)
        )
    )
    by_model = fits.set_index("model")
    assert by_model.loc["loglog", "b"] == pytest.approx(math.log(3.0 / 2.5) / math.log(2))
    assert pd.isna(by_model.loc["offset", "b"]) and ">= 4 distinct" in by_model.loc["offset", "note"]


def test_fit_power_law_noise_and_input_errors():
    rng = np.random.default_rng(0)
    n = np.geomspace(1e6, 1e9, 12)
    noisy = (50 * n**-0.2 + 2.0) * (1 + 0.002 * rng.standard_normal(n.size))
    fit = fit_power_law(n, noisy, "offset")
    assert fit.b == pytest.approx(0.2, rel=0.1) and fit.r2 > 0.99
    assert fit.predict(n).shape == n.shape
    with pytest.raises(ValueError, match="model must be one of"):
        fit_power_law(n, noisy, "cubic")
    with pytest.raises(ValueError, match="> 0"):
        fit_power_law([1.0, 2.0], [1.0, -1.0])
    with pytest.raises(ValueError, match="equal length"):
        fit_power_law([1.0, 2.0], [1.0])


def test_ablation_tables_against_the_papers_reference():
    l3 = {"l3_allocation": "lzw", "l3_cap": 512, "l3_tied": False, "l3_positions": "1,3"}
    runs = table(
        run("base0", "l3", seed=0, loss=3.0, tok=100.0, **l3),
        run("base1", "l3", seed=1, loss=3.2, tok=100.0, **l3),
        run("cap64", "l3", loss=3.4, tok=120.0, **(l3 | {"l3_cap": 64, "variant": "cap=64"})),
        run("uni", "l3", loss=3.3, tok=100.0, **(l3 | {"l3_allocation": "uniform"})),
        run("mid", "l3", loss=2.9, tok=90.0, **(l3 | {"l3_positions": "2"})),
        run("dense", "dense", loss=5.0),  # not L3: never in an ablation
    )
    tables = analysis.ablation_tables(runs)
    assert set(tables) == {"l3_allocation", "l3_cap", "l3_positions"}  # tied never varies
    cap = tables["l3_cap"].set_index("l3_cap")
    assert cap.loc[512, "reference"] == "512" and cap.loc[512, "n_seeds"] == 2
    assert cap.loc[64, "delta_val_loss"] == pytest.approx(3.4 - 3.1)
    assert cap.loc[64, "tokens_per_s_ratio"] == pytest.approx(1.2)
    alloc = tables["l3_allocation"].set_index("l3_allocation")
    assert alloc.loc["uniform", "delta_val_loss"] == pytest.approx(0.2)
    place = tables["l3_positions"].set_index("l3_positions")
    assert set(place["reference"]) == {"1,3"}  # no paper reference: first in sorted order
    assert place.loc["2", "delta_val_loss"] == pytest.approx(-0.2)
    with pytest.raises(ValueError, match="axis must be one of"):
        analysis.ablation_table(runs, "l3_budget")


def test_scone_table_against_dense_of_its_group():
    scone = {names.TRAIN_FLOPS_PER_TOKEN: 9.0e6, names.TRAIN_FLOPS_PER_TOKEN_MAIN: 6.0e6,
             names.LB_SCONE_MATCH_RATE: 0.5, names.MEM_FGRAM_TABLE_BYTES: 4096.0}  # fmt: skip
    runs = table(
        run("d", "dense", loss=3.0, tok=1000.0),
        run("s", "scone", total=1500, loss=2.8, tok=800.0, **scone),
        run("s_off", "scone", group="h", active=1100, loss=2.0),  # its reference: the preset's only dense
    )
    t = analysis.scone_table(runs).set_index("group")
    assert t.loc["g", "delta_val_loss"] == pytest.approx(-0.2)
    assert t.loc["g", "train_flops_ratio"] == pytest.approx(1.5)
    assert t.loc["g", "scone_match_rate"] == 0.5 and t.loc["g", "fgram_table_bytes"] == 4096
    assert t.loc["g", "inference_error"] == 0 and not t.loc["g", "match_flag"]
    assert t.loc["h", "inference_error"] == pytest.approx(0.1) and t.loc["h", "match_flag"]
    assert list(t.index) == ["g", "h"]  # dense rows are not listed

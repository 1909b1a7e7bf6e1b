"""results.load / results.schema: mlflow.search_runs frames become typed run tables, nothing dropped."""

import numpy as np
import pandas as pd
import pytest

from results import load, names, schema


def _raw(**cols) -> pd.DataFrame:
    base = {
        "run_id": ["a", "b"],
        "status": ["FINISHED", "FAILED"],
        f"tags.{names.TAG_JOB_KIND}": ["train", "train"],
    }
    return pd.DataFrame(base | cols)


def test_every_design_metric_is_a_typed_column_even_when_never_logged(raw_runs):
    table = load.runs_from_mlflow(raw_runs)
    for metric in names.METRICS:
        assert table[metric].dtype == "Float64", metric
    for col, dtype in schema.IDENTITY.items():
        assert str(table[col].dtype) == dtype, col
    # fgram_table bytes are logged by no fake job: present, all NA
    assert table[names.params_bytes_key("fgram_table")].isna().all()
    # MoE metrics are NA for L3 runs, not dropped or zero
    l3 = table[table["family"].eq("l3") & table["kind"].eq("train")]
    assert l3[names.LB_EXPERT_CV].isna().all() and l3[names.LB_L3_ROWS_PER_TOKEN_MEAN].eq(4.0).all()


def test_parent_run_is_dropped_and_values_are_parsed(raw_runs):
    table = load.runs_from_mlflow(raw_runs)
    assert "parent" not in set(table["run_id"])
    assert len(table) == len(raw_runs) - 1
    row = table.set_index("run_id").loc["l3-tiny-1"]
    assert row["seed"] == 1 and row["params_active"] == 2_000_000 and row["params_total"] == 8_000_000
    assert row["sparsity"] == pytest.approx(4.0)  # computed from total / active, not logged
    assert row["l3_cap"] == 512 and not row["l3_tied"]  # NA would raise here, not pass
    assert row["l3_positions"] == "1,3" and row["l3_allocation"] == "lzw"
    assert row["match_error"] == pytest.approx(0.004)
    assert row["parent_run_id"] == "parent" and row["suite"] == "fake"  # suite copied from the parent run
    assert row["group"] == "tiny/base"  # the orchestrator's "/s1" seed suffix dropped: seeds aggregate
    assert row["hardware"] == "cpu"  # from isosparse.info.hardware
    moe = table.set_index("run_id").loc["moe-tiny-0"]
    assert moe["match_error"] == pytest.approx(-0.006)  # larger magnitude of active (0.4%) and total (-0.6%)
    assert table.set_index("run_id").loc["l3-tiny-tied", "l3_tied"]


def test_accounting_from_params_when_not_a_metric_and_dotted_suffix_lookup():
    raw = _raw(
        **{
            f"params.{names.PARAMS_ACTIVE}": ["1000", "2000"],
            f"params.{names.PARAMS_TOTAL}": ["4000", None],
            "params.job.model.l3.cap": ["64", None],  # not the documented name, but a unique suffix match
            "metrics.eval/val_loss": [3.0, np.nan],
        }
    )
    table = load.runs_from_mlflow(raw)
    assert table["params_active"].tolist() == [1000, 2000]
    assert table.loc[0, "sparsity"] == pytest.approx(4.0) and pd.isna(table.loc[1, "sparsity"])
    assert table.loc[0, "l3_cap"] == 64
    assert table.loc[0, "eval/val_loss"] == 3.0 and pd.isna(table.loc[1, "eval/val_loss"])


def test_match_error_tag_wins_and_group_keeps_a_foreign_suffix():
    raw = _raw(
        **{
            f"tags.{names.TAG_MATCH_ERROR}": ["0.03", None],
            f"metrics.{names.MATCH_ACTIVE_REL_ERR}": [0.001, -0.002],
            f"tags.{names.TAG_GROUP}": ["g/s1", "g/s7"],
            f"tags.{names.TAG_SEED}": ["1", "1"],
        }
    )
    table = load.runs_from_mlflow(raw)
    assert table["match_error"].tolist() == pytest.approx([0.03, -0.002])
    assert table["group"].tolist() == ["g", "g/s7"]  # only the run's own seed is stripped


def test_config_params_are_read_by_their_exact_name_only():
    cols = {names.param_column(names.PARAM_L3_CAP): ["8", None], "params.job.l3.cap": ["64", "16"]}
    caps = load.runs_from_mlflow(_raw(**cols))["l3_cap"]
    assert caps.iloc[0] == 8 and pd.isna(caps.iloc[1])  # no guessing from a column with the same suffix


def test_bad_values_raise_naming_the_column():
    with pytest.raises(ValueError, match="'seed'"):
        load.runs_from_mlflow(_raw(**{f"tags.{names.TAG_SEED}": ["zero", "1"]}))
    with pytest.raises(ValueError, match="'l3_tied'"):
        load.runs_from_mlflow(_raw(**{f"params.{names.PARAM_L3_TIED}": ["maybe", None]}))
    with pytest.raises(ValueError, match="run_id"):
        schema.coerce(pd.DataFrame({"family": ["l3"]}))


def test_empty_search_result_gives_empty_typed_table():
    table = load.runs_from_mlflow(pd.DataFrame())
    assert table.empty and list(table.columns) == schema.columns()
    assert table["params_active"].dtype == "Int64"


def test_per_batch_size_long_form(raw_runs):
    table = load.runs_from_mlflow(raw_runs)
    cols = schema.batch_size_columns(table, names.INFER_OFFLOAD_DECODE_RATIO)
    assert list(cols) == [1, 4, 16]
    long = schema.per_batch_size(table, names.INFER_OFFLOAD_DECODE_RATIO)
    assert set(long["family"]) == {"l3"}  # only L3 offloads; NA rows of other runs dropped
    one = long[long["run_id"] == "l3-tiny-infer"]
    assert one["batch_size"].tolist() == [1, 4, 16]
    assert one["value"].tolist() == pytest.approx([0.5, 0.7, 0.9])
    # "infer/decode_tokens_per_s/bs4" must not be read as a batch size of the offload key, nor vice versa
    assert set(schema.batch_size_columns(table, names.INFER_DECODE_TOKENS_PER_S).values()) == {
        names.batch_size_key(names.INFER_DECODE_TOKENS_PER_S, b) for b in (1, 4, 16)
    }


def test_history_from_mlflow_long_form():
    hist = load.history_from_mlflow({"r1": {"train/loss": [(0, 2.0), (1, 1.5)]}, "r2": {"train/loss": []}})
    assert hist.to_dict("list") == {
        "run_id": ["r1", "r1"],
        "key": ["train/loss", "train/loss"],
        "step": [0, 1],
        "value": [2.0, 1.5],
    }


def test_match_error_is_the_largest_magnitude_of_the_errors_given():
    assert schema.match_error(0.01, -0.03) == -0.03
    assert schema.match_error(-0.02, 0.02) == -0.02  # a tie keeps the first (active before total)
    assert schema.match_error(None, float("nan"), pd.NA, 0.015) == 0.015
    assert schema.match_error() is None and schema.match_error(None, pd.NA) is None

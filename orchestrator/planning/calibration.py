"""Calibration from the tracking store: each measured train run's preset model sized by the capacity model
(FLOPs per token, predicted peak bytes) next to what it measured, fitted by `clusters.calibration`.
"""

import pandas as pd

from clusters import capacity
from clusters.calibration import Calibration, calibrate
from clusters.shapes import TrainSetup
from clusters.spec import Cluster
from orchestrator.planning.plan import model_shape
from results import names
from workloads import api as workloads


def calibration_frame(runs: pd.DataFrame, cluster: Cluster | None = None) -> pd.DataFrame:
    """Add what `clusters.calibration.calibrate` needs to a run table with preset, family, hardware,
    batch_size and seq_len columns (and optionally n_devices): flops_per_token and predicted_peak_bytes
    of each run's preset model (overrides are not applied: runs with overrides need their own shape)."""
    flops, peaks = [], []
    for row in runs.itertuples(index=False):
        shape = model_shape(workloads.preset_model(row.preset, row.family))
        gpu = str(row.hardware) != "cpu"
        n_devices = int(getattr(row, "n_devices", 1) or 1)
        setup = TrainSetup(
            int(row.batch_size),
            int(row.seq_len),
            n_gpus=n_devices,
            precision="amp-bf16" if gpu else "fp32",
            optimizer_impl="fused",
        )
        flops.append(shape.train_flops_per_token(setup.seq_len))
        peaks.append(capacity.train_memory(shape, setup).peak)
    return runs.assign(
        flops_per_token=pd.Series(flops, index=runs.index, dtype="float64"),
        predicted_peak_bytes=pd.Series(peaks, index=runs.index, dtype="float64"),
    )


def _column(raw: pd.DataFrame, *columns: str, numeric: bool = False) -> pd.Series:
    """The first of `columns` present in an mlflow.search_runs frame, filled from the later ones."""
    found = pd.Series(pd.NA, index=raw.index, dtype="object")
    for column in columns:
        if column in raw:
            found = found.fillna(pd.to_numeric(raw[column], errors="coerce") if numeric else raw[column])
    return found


def calibration_from_store(raw: pd.DataFrame) -> Calibration:
    """`calibrate` on the FINISHED train runs of an `mlflow.search_runs` frame of job runs (any
    experiments). Per run: hardware tag, preset/family tags, job.batch_size / job.seq_len params,
    train/tokens_per_s and (GPU runs) mem/peak_device_bytes; CPU host RSS is not a model-memory number
    and is left out of the memory fit. Raises ValueError when no run can be used."""
    if raw.empty:
        raise ValueError("the tracking store has no job runs to calibrate on: run a suite first")
    tag, param = names.tag_column, names.param_column
    done = raw[(raw["status"] == "FINISHED") & (_column(raw, tag(names.TAG_JOB_KIND)) == "train")]
    frame = done.assign(
        hardware=_column(done, tag(names.TAG_HARDWARE), tag(names.TAG_INFO_HARDWARE)),
        preset=_column(done, tag(names.TAG_PRESET)),
        family=_column(done, tag(names.TAG_FAMILY)),
        batch_size=_column(done, param(names.PARAM_BATCH_SIZE), numeric=True),
        seq_len=_column(done, param(names.PARAM_SEQ_LEN), param(names.PARAM_DATA_SEQ_LEN), numeric=True),
    ).dropna(subset=["hardware", "preset", "family", "batch_size", "seq_len"])
    if frame.empty:
        raise ValueError("no FINISHED train run in the tracking store has hardware, preset and batch shape")
    frame = calibration_frame(frame[["hardware", "preset", "family", "batch_size", "seq_len"]], None)

    frame[names.TRAIN_TOKENS_PER_S] = _column(
        done, names.metric_column(names.TRAIN_TOKENS_PER_S), numeric=True
    )
    peak = _column(done, names.metric_column(names.MEM_PEAK_DEVICE_BYTES), numeric=True)
    frame["measured_peak_bytes"] = peak.where(frame["hardware"] != "cpu")
    return calibrate(frame)

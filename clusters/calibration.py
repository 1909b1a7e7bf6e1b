"""`calibrate(runs_df)`: fit the time and memory factors of the capacity model to finished runs.
Details: docs/clusters.md#clusterscalibration."""

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from clusters import catalog
from clusters.roofline import DEFAULT_MFU

if TYPE_CHECKING:
    import pandas as pd

TOKENS_PER_S = "train/tokens_per_s"
FLOPS_PER_TOKEN = "flops_per_token"
N_DEVICES = "n_devices"
PARAMS_ACTIVE = "params_active"
PREDICTED_PEAK = "predicted_peak_bytes"
MEASURED_PEAK = "measured_peak_bytes"
PEAK_DEVICE = "mem/peak_device_bytes"


@dataclass(frozen=True)
class HardwareFit:
    """The fitted factors of one hardware and their errors on the runs they were fitted on (fractions)."""

    hardware: str
    n_time_runs: int
    n_memory_runs: int
    flops_per_s: float | None
    mfu: float | None  # flops_per_s / bf16 peak; None without a catalog peak (cpu)
    time_error_before: float | None  # median |predicted/measured tokens/s - 1| at DEFAULT_MFU
    time_error_after: float | None
    memory_scale: float | None
    memory_error_before: float | None
    memory_error_after: float | None


@dataclass(frozen=True)
class Calibration:
    by_hardware: dict[str, HardwareFit] = field(default_factory=dict)

    def flops_per_s(self, acc: catalog.Accelerator, precision: str = "amp-bf16") -> float | None:
        """Achieved FLOP/s per device measured on `acc` (None when no run of it was calibrated)."""
        fit = self.by_hardware.get(acc.name)
        return None if fit is None else fit.flops_per_s

    def memory_scale(self, hardware: str) -> float:
        fit = self.by_hardware.get(hardware)
        return 1.0 if fit is None or fit.memory_scale is None else fit.memory_scale

    def rows(self) -> list[dict]:
        return [vars(fit) for fit in self.by_hardware.values()]


def _geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def _median_abs_err(pred: list[float], measured: list[float]) -> float:
    errs = sorted(abs(p / m - 1) for p, m in zip(pred, measured, strict=True))
    mid = len(errs) // 2
    return errs[mid] if len(errs) % 2 else (errs[mid - 1] + errs[mid]) / 2


def _valid(value) -> bool:
    try:
        return value is not None and math.isfinite(float(value)) and float(value) > 0
    except (TypeError, ValueError):
        return False


def _time_fit(rows: "pd.DataFrame", acc: catalog.Accelerator) -> dict:
    if FLOPS_PER_TOKEN not in rows and PARAMS_ACTIVE in rows:
        rows = rows.assign(**{FLOPS_PER_TOKEN: 6.0 * rows[PARAMS_ACTIVE].astype("float64")})
    if TOKENS_PER_S not in rows or FLOPS_PER_TOKEN not in rows:
        return {"n_time_runs": 0}
    devices = rows[N_DEVICES] if N_DEVICES in rows else [1] * len(rows)
    rates, measured, flops, n_dev = [], [], [], []
    for tps, fpt, n in zip(rows[TOKENS_PER_S], rows[FLOPS_PER_TOKEN], devices, strict=True):
        if _valid(tps) and _valid(fpt) and _valid(n):
            rates.append(float(tps) * float(fpt) / float(n))
            measured.append(float(tps))
            flops.append(float(fpt))
            n_dev.append(float(n))
    if not rates:
        return {"n_time_runs": 0}
    rate = _geomean(rates)
    peak = acc.peak("bfloat16")
    before = None
    if peak is not None:
        before = _median_abs_err(
            [peak * DEFAULT_MFU * n / f for f, n in zip(flops, n_dev, strict=True)], measured
        )
    after = _median_abs_err([rate * n / f for f, n in zip(flops, n_dev, strict=True)], measured)
    return {
        "n_time_runs": len(rates),
        "flops_per_s": rate,
        "mfu": None if peak is None else rate / peak,
        "time_error_before": before,
        "time_error_after": after,
    }


def _memory_fit(rows: "pd.DataFrame") -> dict:
    measured_col = MEASURED_PEAK if MEASURED_PEAK in rows else PEAK_DEVICE
    if PREDICTED_PEAK not in rows or measured_col not in rows:
        return {"n_memory_runs": 0}
    pairs = [
        (float(p), float(m))
        for p, m in zip(rows[PREDICTED_PEAK], rows[measured_col], strict=True)
        if _valid(p) and _valid(m)
    ]
    if not pairs:
        return {"n_memory_runs": 0}
    pred, meas = [p for p, _ in pairs], [m for _, m in pairs]
    scale = _geomean([m / p for p, m in pairs])
    return {
        "n_memory_runs": len(pairs),
        "memory_scale": scale,
        "memory_error_before": _median_abs_err(pred, meas),
        "memory_error_after": _median_abs_err([p * scale for p in pred], meas),
    }


def calibrate(runs_df: "pd.DataFrame") -> Calibration:
    """Fit flops_per_s and memory_scale per hardware from finished runs (module docstring)."""
    if "hardware" not in runs_df:
        raise ValueError(f"runs_df needs a 'hardware' column, got columns {list(runs_df.columns)}")
    fits = {}
    for hardware, rows in runs_df.groupby("hardware", dropna=True):
        acc = catalog.get(str(hardware))
        values = {
            "flops_per_s": None,
            "mfu": None,
            "time_error_before": None,
            "time_error_after": None,
            "memory_scale": None,
            "memory_error_before": None,
            "memory_error_after": None,
        }
        values.update(_time_fit(rows, acc))
        values.update(_memory_fit(rows))
        if values["n_time_runs"] or values["n_memory_runs"]:
            fits[acc.name] = HardwareFit(hardware=acc.name, **values)
    if not fits:
        raise ValueError(
            f"no run has the columns calibration needs: {TOKENS_PER_S} + {FLOPS_PER_TOKEN} (time) or "
            f"{PREDICTED_PEAK} + {MEASURED_PEAK}/{PEAK_DEVICE} (memory), with positive values"
        )
    return Calibration(fits)

"""calibrate(): recover known factors from synthetic runs and report errors before and after."""

import math

import pandas as pd
import pytest

from clusters import catalog
from clusters.calibration import calibrate
from clusters.roofline import DEFAULT_MFU


def test_recovers_mfu_and_memory_scale():
    peak = catalog.peak_flops("h100-sxm", "bf16")
    fpt = [1e9, 2e9, 4e9]
    # Three runs at exactly 40% MFU on 1, 2 and 4 GPUs; memory 10% above the prediction.
    tps = [0.4 * peak * n / f for f, n in zip(fpt, (1, 2, 4), strict=True)]
    df = pd.DataFrame({"hardware": "h100-sxm", "train/tokens_per_s": tps, "flops_per_token": fpt,
                       "n_devices": [1, 2, 4], "predicted_peak_bytes": [1e9, 2e9, 3e9],
                       "mem/peak_device_bytes": [1.1e9, 2.2e9, 3.3e9]})  # fmt: skip
    fit = calibrate(df).by_hardware["h100-sxm"]
    assert fit.mfu == pytest.approx(0.4)
    assert fit.time_error_before == pytest.approx(abs(DEFAULT_MFU / 0.4 - 1))
    assert fit.time_error_after == pytest.approx(0, abs=1e-12)
    assert fit.memory_scale == pytest.approx(1.1)
    assert fit.memory_error_before == pytest.approx(1 / 1.1 - 1, abs=1e-12) or fit.memory_error_before == (
        pytest.approx(abs(1 / 1.1 - 1))
    )
    assert fit.memory_error_after == pytest.approx(0, abs=1e-12)
    assert (fit.n_time_runs, fit.n_memory_runs) == (3, 3)


def test_geometric_mean_and_median_error():
    # Achieved FLOP/s 1e14 and 4e14 -> geometric mean 2e14; each run is then off by a factor 2.
    df = pd.DataFrame({"hardware": ["a100-80gb"] * 2, "train/tokens_per_s": [1e5, 4e5],
                       "flops_per_token": [1e9, 1e9]})  # fmt: skip
    cal = calibrate(df)
    fit = cal.by_hardware["a100-80gb"]
    assert fit.flops_per_s == pytest.approx(2e14)
    assert fit.time_error_after == pytest.approx((1.0 + 0.5) / 2)
    assert cal.flops_per_s(catalog.get("a100-80gb")) == pytest.approx(2e14)
    assert cal.memory_scale("a100-80gb") == 1.0  # no memory columns: unscaled


def test_cpu_gets_an_achieved_rate_but_no_mfu():
    df = pd.DataFrame({"hardware": ["cpu", "cpu"], "train/tokens_per_s": [1000.0, None],
                       "flops_per_token": [2e8, 2e8], "measured_peak_bytes": [5e8, 6e8],
                       "predicted_peak_bytes": [5e8, math.nan]})  # fmt: skip
    fit = calibrate(df).by_hardware["cpu"]
    assert fit.flops_per_s == pytest.approx(2e11) and fit.mfu is None and fit.time_error_before is None
    assert (fit.n_time_runs, fit.n_memory_runs) == (1, 1)  # rows with missing values are skipped


def test_errors():
    with pytest.raises(ValueError, match="needs a 'hardware' column"):
        calibrate(pd.DataFrame({"x": [1]}))
    with pytest.raises(ValueError, match="no run has the columns calibration needs"):
        calibrate(pd.DataFrame({"hardware": ["cpu"], "train/tokens_per_s": [1.0]}))
    with pytest.raises(ValueError, match="unknown accelerator 'h100'"):
        calibrate(pd.DataFrame({"hardware": ["h100"], "train/tokens_per_s": [1.0], "flops_per_token": [1.0]}))

"""Scaling-law fits of loss L against parameter count N (numpy only).
Details: docs/results.md#resultsfits."""

from dataclasses import dataclass
from typing import Literal

import numpy as np

FitModel = Literal["loglog", "offset"]
MIN_POINTS: dict[str, int] = {"loglog": 2, "offset": 4}  # offset: 3 parameters need > 3 points


@dataclass(frozen=True)
class PowerLawFit:
    """L = a·N^(−b) + c (c = 0 for "loglog"); r2 on L; n_points used."""

    model: FitModel
    a: float
    b: float
    c: float
    r2: float
    n_points: int

    def predict(self, n: np.ndarray | float) -> np.ndarray:
        return self.a * np.power(np.asarray(n, dtype=np.float64), -self.b) + self.c


def _loglog(n: np.ndarray, loss: np.ndarray) -> tuple[float, float]:
    slope, intercept = np.polyfit(np.log(n), np.log(loss), 1)
    return float(np.exp(intercept)), float(-slope)


def _sse(n: np.ndarray, loss: np.ndarray, c: float) -> tuple[float, float, float]:
    a, b = _loglog(n, loss - c)
    resid = loss - (a * np.power(n, -b) + c)
    return float(resid @ resid), a, b


def _r2(loss: np.ndarray, pred: np.ndarray) -> float:
    ss_tot = float(((loss - loss.mean()) ** 2).sum())
    ss_res = float(((loss - pred) ** 2).sum())
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")


def _best_offset(n: np.ndarray, loss: np.ndarray) -> float:
    """c minimizing the error: a grid on c/min(L) dense near 1 (the asymptote may be close), then golden
    section between the best grid point's neighbours."""
    top = float(loss.min())
    grid = np.unique(np.concatenate([np.linspace(0.0, 0.99, 100), 1.0 - np.geomspace(1e-2, 1e-7, 60)])) * top
    errors = [_sse(n, loss, c)[0] for c in grid]
    i = int(np.argmin(errors))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    for _ in range(80):
        x1, x2 = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        if _sse(n, loss, x1)[0] <= _sse(n, loss, x2)[0]:
            hi = x2
        else:
            lo = x1
    best = float((lo + hi) / 2.0)
    return best if _sse(n, loss, best)[0] <= errors[i] else float(grid[i])


def fit_power_law(n_params, loss, model: FitModel = "loglog") -> PowerLawFit:
    """Fit L(N). Raises ValueError for an unknown model, too few distinct N, or non-positive N or L."""
    if model not in MIN_POINTS:
        raise ValueError(f"model must be one of {sorted(MIN_POINTS)}, got {model!r}")
    n = np.asarray(n_params, dtype=np.float64)
    y = np.asarray(loss, dtype=np.float64)
    if n.shape != y.shape or n.ndim != 1:
        raise ValueError(f"n_params and loss must be 1-D of equal length, got {n.shape} and {y.shape}")
    if len(np.unique(n)) < MIN_POINTS[model]:
        raise ValueError(
            f"a {model!r} fit needs >= {MIN_POINTS[model]} distinct parameter counts, got {len(np.unique(n))}"
        )
    if (n <= 0).any() or (y <= 0).any() or not np.isfinite(n).all() or not np.isfinite(y).all():
        raise ValueError("n_params and loss must be finite and > 0 for a power-law fit")
    c = _best_offset(n, y) if model == "offset" else 0.0
    _, a, b = _sse(n, y, c)
    fit = PowerLawFit(model=model, a=a, b=b, c=c, r2=float("nan"), n_points=len(n))
    return PowerLawFit(model=model, a=a, b=b, c=c, r2=_r2(y, fit.predict(n)), n_points=len(n))

"""Bjontegaard delta metrics (BD-rate, BD-PSNR) with PCHIP interpolation.

This follows the piecewise-cubic variant used by JVET/AOM common test conditions: each curve is
interpolated with a monotone piecewise cubic Hermite interpolant (scipy's PchipInterpolator), the
interpolants are integrated exactly over the overlapping interval and the mean difference is
reported.

- BD-rate: log-rate as a function of PSNR, over the overlapping PSNR range;
  `100 * (exp(mean(log R_test - log R_anchor)) - 1)` percent. Negative = the test codec needs fewer
  bits for the same quality.
- BD-PSNR: PSNR as a function of log-rate, over the overlapping log-rate range; mean dB difference
  (test - anchor). Positive = the test codec is better.

Functions return None when the curves do not overlap or have fewer than 2 distinct points.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.interpolate import PchipInterpolator


def _clean(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Sort by x, drop non-finite points, average y over duplicate x values."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    ux, inv = np.unique(x, return_inverse=True)
    uy = np.bincount(inv, weights=y) / np.bincount(inv)
    return ux, uy


def _mean_gap(xa, ya, xb, yb) -> float | None:
    """Mean of (fb - fa) over the overlap of the x ranges of two point sets."""
    xa, ya = _clean(xa, ya)
    xb, yb = _clean(xb, yb)
    if xa.size < 2 or xb.size < 2:
        return None
    lo, hi = max(xa[0], xb[0]), min(xa[-1], xb[-1])
    if not hi > lo:
        return None
    ia = float(PchipInterpolator(xa, ya).integrate(lo, hi))
    ib = float(PchipInterpolator(xb, yb).integrate(lo, hi))
    return (ib - ia) / (hi - lo)


def _check(rate, psnr, what):
    rate = np.asarray(rate, dtype=np.float64)
    psnr = np.asarray(psnr, dtype=np.float64)
    if rate.shape != psnr.shape or rate.ndim != 1:
        raise ValueError(f"{what}: rate and PSNR must be 1-D sequences of the same length")
    if np.any(rate[np.isfinite(rate)] <= 0):
        raise ValueError(f"{what}: rates must be positive")
    return rate, psnr


def bd_rate(rate_anchor, psnr_anchor, rate_test, psnr_test) -> float | None:
    """Average bitrate difference (percent) of `test` vs `anchor` at equal PSNR; None if no overlap."""
    ra, pa = _check(rate_anchor, psnr_anchor, "anchor")
    rt, pt = _check(rate_test, psnr_test, "test")
    gap = _mean_gap(pa, np.log(ra), pt, np.log(rt))
    return None if gap is None else float((math.exp(gap) - 1.0) * 100.0)


def bd_psnr(rate_anchor, psnr_anchor, rate_test, psnr_test) -> float | None:
    """Average PSNR difference (dB) of `test` vs `anchor` at equal rate; None if no overlap."""
    ra, pa = _check(rate_anchor, psnr_anchor, "anchor")
    rt, pt = _check(rate_test, psnr_test, "test")
    gap = _mean_gap(np.log(ra), pa, np.log(rt), pt)
    return None if gap is None else float(gap)


def overlap(psnr_anchor, psnr_test) -> tuple[float, float] | None:
    """The PSNR interval over which BD-rate is evaluated, or None."""
    a = [p for p in psnr_anchor if math.isfinite(p)]
    t = [p for p in psnr_test if math.isfinite(p)]
    if not a or not t:
        return None
    lo, hi = max(min(a), min(t)), min(max(a), max(t))
    return (lo, hi) if hi > lo else None

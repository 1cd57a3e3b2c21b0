"""Bjontegaard delta metrics (BD-rate, BD-PSNR) with PCHIP interpolation.

This follows the piecewise-cubic variant used by JVET/AOM common test conditions: each curve is
interpolated with a monotone piecewise cubic Hermite interpolant (PCHIP, Fritsch-Carlson, the same
derivatives as scipy.interpolate.PchipInterpolator), the interpolants are integrated exactly over
the overlapping interval and the mean difference is reported.

- BD-rate: log-rate as a function of PSNR, over the overlapping PSNR range;
  `100 * (exp(mean(log R_test - log R_anchor)) - 1)` percent. Negative = the test codec needs fewer
  bits for the same quality.
- BD-PSNR: PSNR as a function of log-rate, over the overlapping log-rate range; mean dB difference
  (test - anchor). Positive = the test codec is better.

Functions return None when the curves do not overlap or have fewer than 2 distinct points.
No dependency beyond numpy.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


class Pchip:
    """Monotone piecewise cubic Hermite interpolant with exact integration (x strictly increasing)."""

    def __init__(self, x: Sequence[float], y: Sequence[float]):
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        if x.ndim != 1 or x.shape != y.shape or x.size < 2:
            raise ValueError("need at least two points of matching 1-D x and y")
        h = np.diff(x)
        if np.any(h <= 0):
            raise ValueError("x must be strictly increasing")
        self.x, self.y = x, y
        self.d = self._derivatives(h, np.diff(y) / h)

    @staticmethod
    def _derivatives(h: np.ndarray, m: np.ndarray) -> np.ndarray:
        n = h.size + 1
        d = np.zeros(n)
        if n == 2:
            d[:] = m[0]
            return d
        for k in range(1, n - 1):
            m0, m1 = m[k - 1], m[k]
            if m0 * m1 <= 0:
                d[k] = 0.0
            else:
                w1 = 2 * h[k] + h[k - 1]
                w2 = h[k] + 2 * h[k - 1]
                d[k] = (w1 + w2) / (w1 / m0 + w2 / m1)
        d[0] = Pchip._edge(h[0], h[1], m[0], m[1])
        d[-1] = Pchip._edge(h[-1], h[-2], m[-1], m[-2])
        return d

    @staticmethod
    def _edge(h0: float, h1: float, m0: float, m1: float) -> float:
        d = ((2 * h0 + h1) * m0 - h0 * m1) / (h0 + h1)
        if np.sign(d) != np.sign(m0):
            return 0.0
        if np.sign(m0) != np.sign(m1) and abs(d) > abs(3 * m0):
            return 3 * m0
        return d

    def _segment_poly(self, k: int) -> np.ndarray:
        """Coefficients c0..c3 of y(t) = c0 + c1 t + c2 t^2 + c3 t^3 with t = x - x_k on segment k."""
        h = self.x[k + 1] - self.x[k]
        y0, y1 = self.y[k], self.y[k + 1]
        d0, d1 = self.d[k], self.d[k + 1]
        m = (y1 - y0) / h
        c2 = (3 * m - 2 * d0 - d1) / h
        c3 = (d0 + d1 - 2 * m) / (h * h)
        return np.array([y0, d0, c2, c3])

    def __call__(self, xq) -> np.ndarray:
        xq = np.atleast_1d(np.asarray(xq, dtype=np.float64))
        k = np.clip(np.searchsorted(self.x, xq, side="right") - 1, 0, self.x.size - 2)
        out = np.empty_like(xq)
        for i, (xi, ki) in enumerate(zip(xq, k)):
            c = self._segment_poly(int(ki))
            t = xi - self.x[ki]
            out[i] = c[0] + t * (c[1] + t * (c[2] + t * c[3]))
        return out

    def integrate(self, a: float, b: float) -> float:
        """Exact integral over [a, b] (extrapolating with the end segments outside the data)."""
        if b < a:
            return -self.integrate(b, a)
        total = 0.0
        nseg = self.x.size - 1
        for k in range(nseg):
            lo = self.x[k] if k > 0 else -math.inf
            hi = self.x[k + 1] if k < nseg - 1 else math.inf
            s, e = max(a, lo), min(b, hi)
            if e <= s:
                continue
            c = self._segment_poly(k)
            t0, t1 = s - self.x[k], e - self.x[k]
            total += sum(c[j] * (t1 ** (j + 1) - t0 ** (j + 1)) / (j + 1) for j in range(4))
        return float(total)


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
    ia = Pchip(xa, ya).integrate(lo, hi)
    ib = Pchip(xb, yb).integrate(lo, hi)
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

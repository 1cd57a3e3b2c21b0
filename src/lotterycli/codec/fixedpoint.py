"""Exact fixed-point arithmetic for the decoder, carried in float64 tensors.

Why: decoding must give bit-identical pixels on every machine and thread count. Float sums
depend on summation order; sums of integers do not. Every decoder-side activation is a multiple
of 2**-FRAC_BITS with |value| <= ACT_LIMIT, every weight a multiple of 2**-shift (shift <= 16)
with small magnitude, so each product and every partial sum of a matmul or convolution is an
integer multiple of 2**-(FRAC_BITS + shift) below 2**53: float64 represents it exactly, whatever
order BLAS adds in. After each linear op the result is rounded back onto the 2**-FRAC_BITS grid.

Nonlinearities use piecewise-linear tables whose knots are themselves rounded onto the grid;
interpolation is one exact multiply-add, so GELU and tanh are exact functions of their inputs.
The knot values come from math.erf/math.tanh rounded to 2**-16: a one-ulp libm difference could
only matter if a value lay within 1e-16 of a rounding boundary; `table_fingerprint()` is pinned
by a test so any machine where that happens is caught.
"""

from __future__ import annotations

import hashlib
import math
from functools import lru_cache

import torch

FRAC_BITS = 16
ONE = float(1 << FRAC_BITS)
ACT_LIMIT = 256.0  # activations are clamped to [-ACT_LIMIT, ACT_LIMIT] on the decoder side
LUT_RANGE = 8.0  # tables cover [-LUT_RANGE, LUT_RANGE]
LUT_STEP_BITS = 6  # knots every 2**-6
DTYPE = torch.float64


def round_fixed(x: torch.Tensor) -> torch.Tensor:
    """Round onto the 2**-FRAC_BITS grid (half up) and clamp to the activation range."""
    return torch.floor(x * ONE + 0.5).div_(ONE).clamp_(-ACT_LIMIT, ACT_LIMIT)


def dyadic(values: torch.Tensor, shift: int) -> torch.Tensor:
    """Integers times 2**-shift as an exact float64 tensor."""
    return values.to(DTYPE) * (2.0 ** -shift)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x (N, Cin) @ weight (Cout, Cin).T + bias, exact, then rounded to the grid."""
    y = x @ weight.t()
    if bias is not None:
        y = y + bias
    return round_fixed(y)


def _knots(fn) -> torch.Tensor:
    n = int(2 * LUT_RANGE * (1 << LUT_STEP_BITS))
    vals = []
    for i in range(n + 2):  # one spare knot so index n+1 exists for the top edge
        x = -LUT_RANGE + i / (1 << LUT_STEP_BITS)
        vals.append(math.floor(fn(x) * ONE + 0.5) / ONE)
    return torch.tensor(vals, dtype=DTYPE)


def _gelu(x: float) -> float:
    return 0.5 * x * (1.0 + math.erf(x / math.sqrt(2.0)))


@lru_cache(maxsize=None)
def gelu_table() -> torch.Tensor:
    return _knots(_gelu)


@lru_cache(maxsize=None)
def tanh_table() -> torch.Tensor:
    return _knots(math.tanh)


def _interp(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    scale = float(1 << LUT_STEP_BITS)
    pos = (x.clamp(-LUT_RANGE, LUT_RANGE) + LUT_RANGE) * scale  # exact: power-of-two scale
    idx = torch.floor(pos)
    frac = pos - idx
    i = idx.long()
    lo = table[i]
    hi = table[i + 1]
    return round_fixed(lo + frac * (hi - lo))


def gelu(x: torch.Tensor) -> torch.Tensor:
    """Exact GELU on grid values: table inside [-8, 8], 0 below, identity above."""
    y = _interp(x, gelu_table())
    y = torch.where(x > LUT_RANGE, x, y)
    return torch.where(x < -LUT_RANGE, torch.zeros_like(x), y)


def tanh(x: torch.Tensor) -> torch.Tensor:
    """Exact tanh on grid values (saturates to +-1 beyond +-8)."""
    return _interp(x, tanh_table())


def table_fingerprint() -> str:
    """SHA-256 of the nonlinearity tables, pinned in the tests (catches libm differences)."""
    h = hashlib.sha256()
    for t in (gelu_table(), tanh_table()):
        h.update((t * ONE).to(torch.int64).numpy().tobytes())
    return h.hexdigest()
